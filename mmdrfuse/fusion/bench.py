"""Command ``mmdrfuse bench``: the paper's Table 3 (parameters, size, MACs, latency).

``bench`` times, in one run, each network's fast inference path against the plain eager
PyTorch module (float32, ``torch.no_grad``) on the same random frame, and reports medians
after warm-up:

- student on CPU: ``compile_student`` (fused C kernel, or channels-last torch without a
  compiler), uint8 in, float32 out, the input conversion included; the eager reference is
  timed on a ready float tensor.
- teacher on CPU: ``torch.inference_mode`` + channels-last (+ ``torch.compile`` with
  ``--teacher-compile``) against eager.
- on CUDA: the student as a Triton kernel (where triton is installed; the float16 module
  is timed beside it), the teacher in float16 (+ ``torch.compile`` with
  ``--teacher-compile``); eager float32 with PyTorch's default TF32 convolutions as the
  reference.

MACs are counted from the convolution shapes (``out_pixels * in_channels * k * k`` per
conv, biases and the teacher's upsampling not counted), which gives the paper's 0.142 G
(108 per pixel) for the student at 1280x1024.

``mmdrfuse export`` (ONNX) is :mod:`mmdrfuse.fusion.export`; :func:`register` adds it too, so
the command table lists this module only.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, Optional, Tuple

from mmdrfuse.config import add_command
from mmdrfuse.data.io import parse_size as parse_image_size
from mmdrfuse.native import cpu_description

MODEL_NAMES = ("student", "teacher")


def register(subparsers) -> None:
    """Add ``bench`` (options: that section of mmdrfuse/cfg/default.yaml)."""
    add_command(subparsers, "bench", section="bench", handler=run_bench,
                help="Table 3: parameters, size, MACs and latency of student and teacher")


def parse_size(text: str) -> Tuple[int, int]:
    """``"1280x1024"`` -> ``(width, height)``; both must be >= 2 (the reflection padding)."""
    return parse_image_size(text, minimum=2)


def count_macs(model, height: int, width: int) -> int:
    """Multiply-accumulates of every Conv2d for one (1, 2, H, W) input, from the output shapes.

    Runs the model on the meta device (shapes only, no arithmetic), so it is instant at
    any size: per conv, ``out.numel() * in_channels / groups * kh * kw``.
    """
    import copy

    import torch
    from torch import nn

    meta_model = copy.deepcopy(model).to("meta")
    total = 0

    def add(module, _inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    hooks = [m.register_forward_hook(add) for m in meta_model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            meta_model(torch.empty(1, 2, height, width, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def median_ms(run: Callable[[], object], repeats: int, warmup: int, synchronize: Optional[Callable] = None) -> float:
    """Median wall time of ``run()`` in milliseconds over ``repeats`` calls after ``warmup`` calls."""
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _random_frames(height: int, width: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width), dtype=np.uint8), rng.integers(0, 256, (height, width), dtype=np.uint8)


def bench_cpu(name: str, model, ir, vi, args) -> Dict[str, object]:
    """Fast path and eager reference of one model on the CPU; fields ``cpu_ms``, ``cpu_ms_reference``, ..."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.stack([ir, vi])[None]).float() / 255.0
    repeats = args.repeats if name == "student" else args.teacher_repeats
    # One teacher warm-up is enough: its runs take seconds on a CPU.
    warmup = args.warmup if name == "student" else min(args.warmup, 1)
    with torch.no_grad():
        reference = model(x)[0][0, 0].numpy()
        reference_ms = median_ms(lambda: model(x), repeats, warmup)
    if name == "student":
        from mmdrfuse.fusion.fast_student import compile_student

        cpu_backend = "auto" if args.backend in ("triton", "half") else args.backend
        fast = compile_student(model, backend=cpu_backend, threads=args.threads)
        backend = fast.backend
        fused = fast(ir, vi)
        fast_ms = median_ms(lambda: fast(ir, vi), repeats, warmup)
    else:
        fast_model, backend = _fast_teacher(model, args.teacher_compile, half=False, example=x, channels_last=True)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            fused = fast_model(x_cl)[0][0, 0].numpy()
            fast_ms = median_ms(lambda: fast_model(x_cl), repeats, warmup)
    return {
        "cpu_backend": backend,
        "cpu_ms": round(fast_ms, 3),
        "cpu_ms_reference": round(reference_ms, 3),
        "speedup_cpu": round(reference_ms / fast_ms, 2),
        "cpu_max_abs_diff": float(np.abs(fused - reference).max()),
        "cpu_repeats": repeats,
    }


def _fast_teacher(teacher, compile_it: bool, half: bool, example, channels_last: bool):
    """The teacher for inference (float16 if ``half``, channels-last if asked), compiled if asked and possible."""
    import copy

    import torch

    fast = copy.deepcopy(teacher).eval()
    fast = fast.half() if half else fast
    fast = fast.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    backend = ", ".join(["float16" if half else "float32"] + (["channels-last"] if channels_last else []))
    if compile_it:
        compiled = torch.compile(fast)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        try:
            with torch.inference_mode():
                compiled(example.to(next(fast.parameters()).dtype).contiguous(memory_format=layout))
            return compiled, backend + " compiled"
        except Exception as error:  # noqa: BLE001 - any compiler failure means: run uncompiled
            warnings.warn(f"torch.compile of the teacher failed, timing it uncompiled: {error}", RuntimeWarning, stacklevel=2)
    return fast, backend


def bench_cuda(name: str, model, ir, vi, args) -> Dict[str, object]:
    """Fast path and eager float32 reference of one model on CUDA, with CUDA synchronisation."""
    import torch

    device = torch.device("cuda")
    model = model.to(device)
    ir_gpu, vi_gpu = torch.from_numpy(ir).to(device), torch.from_numpy(vi).to(device)
    x = torch.stack([ir_gpu, vi_gpu])[None].float() / 255.0
    repeats = args.repeats
    sync = torch.cuda.synchronize
    with torch.no_grad():
        reference = model(x)[0][0, 0]
        reference_ms = median_ms(lambda: model(x), repeats, args.warmup, sync)
    result: Dict[str, object] = {}
    if name == "student":
        from mmdrfuse.fusion.fast_student_cuda import compile_student_cuda

        backend = args.backend if args.backend in ("triton", "half") else "auto"
        fast = compile_student_cuda(model, backend=backend)
        if fast.backend == "cuda-triton":
            # The float16 path is timed too, so one run shows what the kernel buys.
            half = compile_student_cuda(model, backend="half")
            result["cuda_ms_half"] = round(median_ms(lambda: half(ir_gpu, vi_gpu), repeats, args.warmup, sync), 4)
            result["cuda_half_max_abs_diff"] = float((half(ir_gpu, vi_gpu) - reference).abs().max())
        fused = fast(ir_gpu, vi_gpu)
        fast_ms = median_ms(lambda: fast(ir_gpu, vi_gpu), repeats, args.warmup, sync)
        backend = fast.backend
    else:
        fast_model, backend = _fast_teacher(model, args.teacher_compile, half=True, example=x, channels_last=False)
        x_half = x.half()
        with torch.inference_mode():
            fused = fast_model(x_half)[0][0, 0].float()
            fast_ms = median_ms(lambda: fast_model(x_half), repeats, args.warmup, sync)
    result.update({
        "cuda_reference_tf32": bool(torch.backends.cudnn.allow_tf32),
        "cuda_backend": backend,
        "cuda_ms": round(fast_ms, 4),
        "cuda_ms_reference": round(reference_ms, 4),
        "speedup_cuda": round(reference_ms / fast_ms, 2),
        "cuda_max_abs_diff": float((fused - reference).abs().max()),
        "cuda_repeats": repeats,
    })
    model.cpu()
    return result


def bench_pairs(ir_dir, vi_dir, args) -> Dict[str, object]:
    """Student, fast vs eager, over every pair of two folders: uint8 in, float32 out, disk I/O excluded.

    Each path runs over all pairs ``min(repeats, 3)`` times (after one warm-up pass) and the
    median total is reported.
    """
    import numpy as np
    import torch
    from tqdm import tqdm

    from mmdrfuse.data.io import check_same_size, match_pairs, read_gray
    from mmdrfuse.fusion.fast_student import compile_student
    from mmdrfuse.fusion.networks import Student

    pairs, _ = match_pairs(ir_dir, vi_dir)
    frames = []
    for _stem, ir_path, vi_path in tqdm(pairs, desc="bench: reading pairs", unit="pair"):
        ir, vi = read_gray(ir_path), read_gray(vi_path)
        check_same_size(ir, vi, ir_path, vi_path)
        frames.append((ir, vi))
    torch.manual_seed(args.seed)
    student = Student().eval()
    fast = compile_student(student, backend=args.backend if args.backend in ("native", "torch") else "auto",
                           threads=args.threads)

    def eager_pass():
        with torch.no_grad():
            return [student(torch.from_numpy(np.stack(pair)[None]).float() / 255.0)[0][0, 0].numpy() for pair in frames]

    def fast_pass():
        return [fast(ir, vi) for ir, vi in frames]

    difference = max(float(np.abs(a - b).max()) for a, b in zip(fast_pass(), eager_pass()))
    repeats = min(args.repeats, 3)
    fast_ms = median_ms(fast_pass, repeats, 1)
    eager_ms = median_ms(eager_pass, repeats, 1)
    return {
        "count": len(frames),
        "pixels": int(sum(ir.size for ir, _ in frames)),
        "student_fast_total_ms": round(fast_ms, 2),
        "student_eager_total_ms": round(eager_ms, 2),
        "speedup": round(eager_ms / fast_ms, 2),
        "max_abs_diff": difference,
        "backend": fast.backend,
    }


def markdown_table(results: Dict[str, object], width: int, height: int) -> str:
    device = results["device_kind"]
    lines = [
        f"| model | params | size (KB) | GMACs @{width}x{height} | fast {device} ms | eager {device} ms | speedup | fast path |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name in MODEL_NAMES:
        row = results.get(name)
        if not row:
            continue
        lines.append(
            f"| {name} | {row['params']:,} | {row['size_kb']:.2f} | {row[f'gmacs_{width}x{height}']:.3f} "
            f"| {row[f'{device}_ms']:.2f} | {row[f'{device}_ms_reference']:.2f} | {row[f'speedup_{device}']:.1f}x "
            f"| {row[f'{device}_backend']} |"
        )
    notes = [
        f"device: {results['device']}, threads: {results['threads']}; medians of "
        + ", ".join(f"{results[n][f'{device}_repeats']} ({n})" for n in MODEL_NAMES if n in results)
        + " timed runs after warm-up.",
        "size: float32 weights; MACs from the conv shapes (biases and upsampling not counted);",
        "eager: the nn.Module in float32 under torch.no_grad on a ready float tensor;",
        "fast student: uint8 frames in, float32 Tanh out (conversion included).",
    ]
    pairs = results.get("pairs")
    if pairs:
        notes.append(
            f"real pairs: {pairs['count']} ({pairs['pixels'] / 1e6:.1f} Mpixel), student fast "
            f"{pairs['student_fast_total_ms']:.0f} ms vs eager {pairs['student_eager_total_ms']:.0f} ms in all "
            f"({pairs['speedup']:.1f}x, {pairs['backend']}, I/O excluded)."
        )
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def run_bench(**options) -> int:
    import torch

    from mmdrfuse.files import write_text_atomic
    from mmdrfuse.fusion.fast_student import available_cores
    from mmdrfuse.fusion.networks import build_model, count_parameters

    args = argparse.Namespace(**options)  # the timing helpers read the settings as attributes
    width, height = parse_size(args.size)
    names = [n.strip() for n in str(args.models).split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODEL_NAMES))
    if unknown or not names:
        raise ValueError(f"--models takes a comma-separated subset of {MODEL_NAMES}, got {args.models!r}")
    if args.repeats < 1 or args.teacher_repeats < 1 or args.warmup < 0:
        raise ValueError("--repeats and --teacher-repeats must be >= 1, --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available to torch")
    args.threads = args.threads or available_cores()
    torch.set_num_threads(args.threads)
    ir, vi = _random_frames(height, width, args.seed)

    results: Dict[str, object] = {"device_kind": args.device, "size": f"{width}x{height}", "threads": args.threads}
    if args.device == "cuda":
        results["device"] = torch.cuda.get_device_name()
    else:
        results["device"] = cpu_description()
    for name in names:
        torch.manual_seed(args.seed)
        model = build_model(name).eval()
        params = count_parameters(model)
        row: Dict[str, object] = {
            "params": params,
            "size_kb": round(params * 4 / 1024, 3),
            f"gmacs_{width}x{height}": round(count_macs(model, height, width) / 1e9, 4),
        }
        print(f"bench: {name} on {args.device} ...", file=sys.stderr, flush=True)
        row.update(bench_cpu(name, model, ir, vi, args) if args.device == "cpu" else bench_cuda(name, model, ir, vi, args))
        results[name] = row

    if args.ir or args.vi:
        if not (args.ir and args.vi):
            raise ValueError("--ir and --vi go together")
        results["pairs"] = bench_pairs(args.ir, args.vi, args)

    table = markdown_table(results, width, height)
    print(table, end="")
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2) + "\n")
    if args.markdown:
        write_text_atomic(args.markdown, table)
    return 0
