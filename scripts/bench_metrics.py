#!/usr/bin/env python3
"""Benchmark the fusion metrics on ONE CPU core.

``--convention mmif`` (default): one 1280x1024 pair; the median wall and CPU time of every
metric, of all twelve in one call, and of a straightforward ``scipy.signal.convolve2d`` VIF
(the widely used Python evaluator's way) in the same run, with the speed-up. Uses an LLVIP
sample pair from ../shared when present, else a synthetic random-texture pair.

``--convention vifb``: one 640x480 RGB triple (VIFB's ``labMan``, fused by ADF, from
../shared when present, else synthetic RGB textures); every VIFB metric, all 13 in one call,
and in the same run the straightforward transcription of VIFB's MATLAB code
(``tests/reference_vifb.py``, Qcb and Qcv included) as the baseline, with the ratio.

``--against DIR`` (vifb): also time all 13 in another checkout of the project (an older commit, e.g.
``git archive REV mmdrfuse | tar -x -C DIR``) against this one: two child processes taking turns
call by call, ``--against-calls`` calls each: before and after in one run on a shared machine.

``MMDRFUSE_SHARED`` overrides the location of ../shared. Medians, because the machine may be shared.

    python3 scripts/bench_metrics.py [--convention mmif|vifb] [--repeats 15] [--baseline-repeats 3] [--json FILE]
                                     [--against DIR [--against-calls 30]]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from mmdrfuse.data.io import read_as_stored, read_gray
from mmdrfuse.files import write_text_atomic
from mmdrfuse.metrics import ALL_METRICS, METRICS, evaluate_batch
from mmdrfuse.metrics.vifb import VIFB_METRICS, vifb_scores

# The straightforward convolve2d VIF of the tests' reference is the baseline timed here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_metrics import vifp  # noqa: E402
from reference_vifb import REFERENCE as VIFB_REFERENCE  # noqa: E402

SHARED = Path(os.environ.get("MMDRFUSE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def load_pair() -> tuple[str, np.ndarray, np.ndarray]:
    root = SHARED / "datasets" / "LLVIP-samples"
    for ir_path in sorted((root / "infrared").rglob("*.jpg")):
        vi_path = root / "visible" / ir_path.relative_to(root / "infrared")
        if vi_path.is_file():
            ir, vi = read_gray(ir_path), read_gray(vi_path)
            if ir.shape == vi.shape == (1024, 1280):
                return str(ir_path.relative_to(SHARED)), ir, vi
    rng = np.random.default_rng(0)

    def texture(blur: float) -> np.ndarray:
        noise = cv2.GaussianBlur(rng.random((1024, 1280)) * 255, (0, 0), blur)
        return np.clip((noise - noise.mean()) * 8 + 128, 0, 255).round().astype(np.uint8)

    return "synthetic random texture", texture(2.0), texture(4.0)


def load_vifb_triple() -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(source, vi, ir, fused): uint8 RGB (480, 640, 3) arrays as MATLAB reads them."""
    root = SHARED / "datasets" / "VIFB"
    paths = [root / "vi" / "labMan.jpg", root / "ir" / "labMan.jpg", root / "fused" / "ADF" / "labMan.jpg"]
    if all(path.is_file() for path in paths):
        images = [read_as_stored(path) for path in paths]
        if all(image.shape == (480, 640, 3) for image in images):
            return "VIFB labMan, fused by ADF", *images
    rng = np.random.default_rng(0)

    def texture(blur: float) -> np.ndarray:
        noise = cv2.GaussianBlur(rng.random((480, 640, 3)) * 255, (0, 0), blur)
        return np.clip((noise - noise.mean()) * 8 + 128, 0, 255).round().astype(np.uint8)

    vi, ir = texture(2.0), texture(4.0)
    return "synthetic random RGB texture", vi, ir, ((vi.astype(np.float64) + ir) / 2).round().astype(np.uint8)


def measure(function, repeats: int, warm_up: bool = True) -> tuple[float, float]:
    """Median wall and CPU seconds of ``function()`` over ``repeats`` runs (after one warm-up)."""
    if warm_up:
        function()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


# A child process: all 13 VIFB metrics of the benchmark's triple with the mmdrfuse found on its
# PYTHONPATH, one thread; one call per line read from stdin, answering its wall and CPU seconds.
CHILD = """
import json, sys, time, cv2, torch
torch.set_num_threads(1); cv2.setNumThreads(1)
sys.path.insert(0, {scripts!r})
from bench_metrics import load_vifb_triple
import mmdrfuse
from mmdrfuse.metrics.vifb import vifb_scores
_, vi, ir, fused = load_vifb_triple()
vifb_scores(vi, ir, fused)
print(mmdrfuse.__file__, flush=True)
for _ in sys.stdin:
    wall, cpu = time.perf_counter(), time.process_time()
    vifb_scores(vi, ir, fused)
    print(json.dumps([time.perf_counter() - wall, time.process_time() - cpu]), flush=True)
"""


def alternate(checkouts: dict, calls: int) -> dict:
    """{name: (median wall, median CPU)} of all 13 per call: one child process per checkout, the
    children taking turns call by call (the order swapped every call), so that both see the same load."""
    import subprocess

    code = CHILD.format(scripts=str(Path(__file__).resolve().parent))
    children = {
        # cwd too: ``python -c`` puts the working directory first on sys.path, before PYTHONPATH.
        name: subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(root)), cwd=str(root),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for name, root in checkouts.items()
    }
    try:
        for name, child in children.items():
            package = Path(child.stdout.readline().strip() or ".").resolve()
            if Path(checkouts[name]).resolve() not in package.parents:
                raise RuntimeError(f"the {name} child process imported mmdrfuse from {package}, not {checkouts[name]}")
        times = {name: [] for name in children}
        for call in range(calls):
            order = list(children) if call % 2 == 0 else list(children)[::-1]
            for name in order:
                children[name].stdin.write("\n")
                children[name].stdin.flush()
                times[name].append(json.loads(children[name].stdout.readline()))
    finally:
        for child in children.values():
            child.stdin.close()
            child.wait()
    return {name: tuple(statistics.median(column) for column in zip(*runs)) for name, runs in times.items()}


def bench_vifb(args) -> dict:
    source, vi, ir, fused = load_vifb_triple()
    print(f"triple: {source} ({vi.shape[1]}x{vi.shape[0]}, RGB), 1 thread, median of {args.repeats}")
    per_metric = {}
    for name in VIFB_METRICS:
        per_metric[name] = measure(lambda: vifb_scores(vi, ir, fused, [name]), args.repeats)
        print(f"  {name:5s} wall {per_metric[name][0] * 1e3:8.1f} ms   cpu {per_metric[name][1] * 1e3:8.1f} ms")
    all_wall, all_cpu = measure(lambda: vifb_scores(vi, ir, fused), args.repeats)
    print(f"  all {len(VIFB_METRICS)}: wall {all_wall * 1e3:.1f} ms   cpu {all_cpu * 1e3:.1f} ms  (target <= 100 ms)")

    def baseline():
        return {name: VIFB_REFERENCE[name](vi, ir, fused) for name in VIFB_METRICS}

    base_wall, base_cpu = measure(baseline, args.baseline_repeats, warm_up=False)
    ours, theirs = vifb_scores(vi, ir, fused), baseline()
    difference = max(abs(ours[name] - theirs[name]) / max(abs(theirs[name]), 1e-12) for name in VIFB_METRICS)
    ratio = base_cpu / all_cpu
    print(f"  MATLAB transcription, all {len(VIFB_METRICS)}: wall {base_wall:.2f} s   cpu {base_cpu:.2f} s"
          f"   -> {ratio:.0f}x faster (max relative difference {difference:.1e})")
    result = {
        "triple": source,
        "size": list(vi.shape),
        "threads": 1,
        "repeats": args.repeats,
        "median_wall_s": {name: times[0] for name, times in per_metric.items()},
        "median_cpu_s": {name: times[1] for name, times in per_metric.items()},
        "all_metrics_wall_s": all_wall,
        "all_metrics_cpu_s": all_cpu,
        "baseline_transcription_wall_s": base_wall,
        "baseline_transcription_cpu_s": base_cpu,
        "speedup_cpu": ratio,
        "max_relative_difference": difference,
    }
    if args.against:
        checkouts = {"this": Path(__file__).resolve().parents[1], "against": Path(args.against).resolve()}
        turns = alternate(checkouts, args.against_calls)
        print(f"  all {len(VIFB_METRICS)}, {args.against_calls} calls each, taking turns call by call in two child processes:")
        for name, (wall, cpu) in turns.items():
            print(f"    {name:8s} {checkouts[name]}: wall {wall * 1e3:.1f} ms   cpu {cpu * 1e3:.1f} ms")
        this, against = turns["this"], turns["against"]
        print(f"    this / against: wall {this[0] / against[0]:.2f}   cpu {this[1] / against[1]:.2f}")
        result["against"] = {"checkout": str(checkouts["against"]), "calls": args.against_calls,
                             "all_metrics_wall_s": {name: times[0] for name, times in turns.items()},
                             "all_metrics_cpu_s": {name: times[1] for name, times in turns.items()}}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--convention", choices=("mmif", "vifb"), default="mmif")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--baseline-repeats", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--against", metavar="DIR", help="vifb: another checkout to time all 13 against, taking turns")
    parser.add_argument("--against-calls", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if args.convention == "vifb":
        result = bench_vifb(args)
        if args.json:
            write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
        return 0

    source, ir, vi = load_pair()
    fused = ((ir.astype(np.float64) + vi) / 2).round()  # an average fusion, rounded like a saved image
    f, a, b = (torch.from_numpy(image.astype(np.float64))[None, None] for image in (fused, ir, vi))
    print(f"pair: {source} ({ir.shape[1]}x{ir.shape[0]}), 1 thread, median of {args.repeats}")

    per_metric = {}
    with torch.no_grad():
        for name in ALL_METRICS:
            per_metric[name] = measure(lambda: METRICS[name](f, a, b), args.repeats)
            print(f"  {name:5s} wall {per_metric[name][0] * 1e3:8.1f} ms   cpu {per_metric[name][1] * 1e3:8.1f} ms")
    all_wall, all_cpu = measure(lambda: evaluate_batch(f, a, b), args.repeats)
    print(f"  all {len(ALL_METRICS)}: wall {all_wall * 1e3:.1f} ms   cpu {all_cpu * 1e3:.1f} ms  (target <= 150 ms)")

    fused64, ir64, vi64 = (image.astype(np.float64) for image in (fused, ir, vi))
    base_wall, base_cpu = measure(lambda: vifp(ir64, fused64) + vifp(vi64, fused64), args.baseline_repeats)
    check = abs(vifp(ir64, fused64) + vifp(vi64, fused64) - float(METRICS["VIF"](f, a, b)[0]))
    speedup = base_cpu / per_metric["VIF"][1]
    print(f"  convolve2d VIF: wall {base_wall:.2f} s   cpu {base_cpu:.2f} s   -> VIF {speedup:.0f}x faster (|diff| {check:.1e})")

    if args.json:
        result = {
            "pair": source,
            "size": list(ir.shape),
            "threads": 1,
            "repeats": args.repeats,
            "median_wall_s": {name: times[0] for name, times in per_metric.items()},
            "median_cpu_s": {name: times[1] for name, times in per_metric.items()},
            "all_metrics_wall_s": all_wall,
            "all_metrics_cpu_s": all_cpu,
            "baseline_convolve2d_vif_wall_s": base_wall,
            "baseline_convolve2d_vif_cpu_s": base_cpu,
            "vif_speedup_cpu": speedup,
            "vif_abs_difference": check,
        }
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
