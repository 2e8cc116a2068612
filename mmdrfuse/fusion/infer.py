"""Fuse folders of infrared/visible pairs with the student or the teacher.

Per pair: both images are read as gray (``cv2.COLOR_BGR2GRAY``, the paper's protocol), fed as
``cat([ir, vi]) / 255``, and the raw Tanh output is saved as an 8-bit PNG: per-image min-max
stretch (``minmax``, the paper's numbers) or clipped to [0, 1] (``clip``). With ``color="ycbcr"``
the Y channel of the visible image (OpenCV YCrCb, which equals BGR2GRAY) is fused with the IR
and the visible image's Cr/Cb are put back.

A folder run checks pairing, sizes and image headers first, decodes and encodes in a thread
pool (OpenCV releases the GIL) while the network runs on batches of same-size pairs, and writes
every PNG and a ``.mmdrfuse.json`` manifest (what produced them) into a staging sibling of
``out_dir`` that is renamed into place in one step when every pair has been fused: a bad file
stops the run with its name and no output, and ``out_dir`` ends holding exactly the last run's
images. An existing non-empty ``out_dir`` is replaced only when it is an earlier ``fuse`` output
(and ``overwrite``); anything else is refused (mmdrfuse.files.check_output_folder).
"""
from __future__ import annotations

import hashlib
import os
import time
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Deque, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch import nn

from mmdrfuse.data.io import (
    MAX_PIXELS,
    DepthRange,
    check_output_outside_inputs,
    check_same_size,
    image_size,
    match_pairs,
    parse_depth_range,
    read_color,
    read_gray,
    write_image_staged,
)
from mmdrfuse.device import resolve_device
from mmdrfuse.errors import DataError
from mmdrfuse.files import atomic_directory, check_output_folder
from mmdrfuse.fusion.networks import MODELS, load_model
from mmdrfuse.fusion.scaling import SCALINGS, to_uint8

PathLike = Union[str, os.PathLike]
COLORS = ("gray", "ycbcr")
ENGINES = ("auto", "eager", "fast")
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
# Pixels per network call: the teacher keeps ~300 float32 maps per pixel alive (1.2 KB), so
# 2 Mpx is ~2.5 GB; the student's 6 maps allow far more.
MAX_BATCH_PIXELS = {"teacher": 2 ** 21, "student": 2 ** 24}
# The smallest side the reflection padding of each network accepts.
MIN_SIDE = {"student": 2, "teacher": 3}
COMMAND = "fuse"


def default_weights(model: str) -> Path:
    """The weights shipped in the package for ``model``: ``mmdrfuse/weights/<model>.pth``."""
    return WEIGHTS_DIR / f"{model}.pth"


def load_fusion_model(model: str, weights: Optional[PathLike] = None, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """The ``student`` or ``teacher`` in eval mode on ``device``, frozen.

    ``weights``: a released ``*.model`` file or a project checkpoint (``*.pth``); ``None`` uses
    the package's own weights, and says what to pass when the package ships none.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
    if weights is None:
        weights = default_weights(model)
        if not weights.is_file():
            raise FileNotFoundError(
                f"no {model} weights are shipped with this package (expected {weights}); pass --weights FILE, "
                f"e.g. the authors' released {model}.model or a checkpoint from 'mmdrfuse train {model}'"
            )
    net = load_model(model, weights)
    net.requires_grad_(False)
    device = resolve_device(str(device))
    if device.type == "cpu":
        # oneDNN's fast layout for few-channel convs: 4x for the student, ~1.3x for the teacher.
        net = net.to(memory_format=torch.channels_last)
    return net.eval().to(device)


def fuse_arrays(net: nn.Module, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """uint8 (B, H, W) IR and visible gray batches -> float32 (B, H, W) raw Tanh outputs on the host.

    A single (H, W) pair is taken as a batch of one. Runs on the device of ``net``.
    """
    ir, vi = np.asarray(ir), np.asarray(vi)
    if ir.ndim == 2:
        ir, vi = ir[None], vi[None]
    if ir.shape != vi.shape or ir.ndim != 3 or ir.dtype != np.uint8 or vi.dtype != np.uint8:
        raise ValueError(f"fuse_arrays expects two uint8 (B, H, W) arrays of one shape, got {ir.shape} {ir.dtype} and {vi.shape} {vi.dtype}")
    device = next(net.parameters()).device
    pair = torch.from_numpy(np.stack([ir, vi], axis=1)).to(device).float().div_(255.0)
    if device.type == "cpu":
        pair = pair.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fused, _ = net(pair)
    return fused[:, 0].float().cpu().numpy()


def _load_fast_student(net: nn.Module) -> Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    try:
        from mmdrfuse.fusion.fast_student import compile_student
    except ImportError:
        return None
    # One thread per call: fuse_folder already runs one pair per worker thread.
    return compile_student(net, threads=1)


def _check_pairs(pairs: Sequence[Tuple[str, Path, Path]], min_side: int = 1) -> Dict[str, Tuple[int, int]]:
    """stem -> (height, width); a size mismatch, an unreadable header, an image smaller than
    ``min_side`` or larger than MAX_PIXELS is a DataError naming the file(s)."""
    sizes = {}
    for stem, ir_path, vi_path in pairs:
        (ir_w, ir_h), (vi_w, vi_h) = image_size(ir_path), image_size(vi_path)
        if (ir_w, ir_h) != (vi_w, vi_h):
            raise DataError(f"size mismatch: {ir_path} is {ir_w}x{ir_h} but {vi_path} is {vi_w}x{vi_h}")
        if min(ir_w, ir_h) < min_side:
            raise DataError(f"{ir_path} and {vi_path} are {ir_w}x{ir_h}: fusion needs at least {min_side}x{min_side} pixels")
        if ir_w * ir_h > MAX_PIXELS:
            raise DataError(f"image header claims {ir_w}x{ir_h} pixels, more than the {MAX_PIXELS} an image may have: {ir_path}")
        sizes[stem] = (ir_h, ir_w)
    return sizes


def _select_pairs(ir_dir: PathLike, vi_dir: PathLike, stems: Optional[Iterable[str]]) -> List[Tuple[str, Path, Path]]:
    if stems is None:
        pairs, _ = match_pairs(ir_dir, vi_dir)
        return pairs
    wanted = list(dict.fromkeys(str(s) for s in stems))
    if not wanted:
        raise DataError("no image ids were requested (stems is empty)")
    pairs, _ = match_pairs(ir_dir, vi_dir, allow_missing=True)
    by_stem = {stem: (stem, ir, vi) for stem, ir, vi in pairs}
    missing = [s for s in wanted if s not in by_stem]
    if missing:
        raise DataError(f"no pair for id(s) {', '.join(missing[:10])} in {ir_dir} and {vi_dir}")
    return [by_stem[s] for s in wanted]


def _read_pair(ir_path: Path, vi_path: Path, color: str,
               depth_range: DepthRange = "minmax") -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """(ir gray, vi gray or Y, vi YCrCb or None)."""
    ir = read_gray(ir_path, depth_range)
    if color == "ycbcr":
        ycrcb = cv2.cvtColor(read_color(vi_path, depth_range), cv2.COLOR_BGR2YCrCb)
        vi = np.ascontiguousarray(ycrcb[..., 0])
    else:
        ycrcb, vi = None, read_gray(vi_path, depth_range)
    check_same_size(ir, vi, ir_path, vi_path)
    return ir, vi, ycrcb


def _write_fused(path: Path, fused: np.ndarray, scaling: str, ycrcb: Optional[np.ndarray]) -> None:
    image = to_uint8(fused, scaling)
    if ycrcb is not None:
        ycrcb = ycrcb.copy()
        ycrcb[..., 0] = image
        image = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)
    write_image_staged(path, image)  # into the staging folder, renamed into --out when all are done


def _batches(stems: Sequence[str], sizes: Dict[str, Tuple[int, int]], batch: int, max_pixels: int) -> List[List[str]]:
    """Groups of same-size stems, at most ``batch`` each and at most ``max_pixels`` pixels per group."""
    groups: Dict[Tuple[int, int], List[str]] = defaultdict(list)
    for stem in stems:
        groups[sizes[stem]].append(stem)
    batches = []
    for (height, width), members in groups.items():
        step = max(1, min(batch, max_pixels // (height * width)))
        batches += [members[i : i + step] for i in range(0, len(members), step)]
    return batches


def fuse_folder(
    *,
    model: str,
    weights: Optional[PathLike],
    device: str,
    scaling: str,
    color: str,
    batch: int,
    engine: str,
    depth_range: DepthRange,
    out_dir: PathLike,
    ir_dir: Optional[PathLike] = None,
    vi_dir: Optional[PathLike] = None,
    stems: Optional[Iterable[str]] = None,
    progress: bool = True,
    workers: Optional[int] = None,
    pairs: Optional[Sequence[Tuple[str, PathLike, PathLike]]] = None,
    overwrite: bool = True,
) -> Dict[str, object]:
    """Fuse every pair of ``ir_dir`` / ``vi_dir`` (matched by stem, or the ids in ``stems``) into ``out_dir/<stem>.png``.

    The settings (``model`` to ``depth_range``) are the keys of the ``fuse`` section of
    mmdrfuse/cfg/default.yaml, which holds their defaults (``mmdrfuse.config.defaults("fuse")``);
    ``weights=None`` is the package's own weights of ``model``.
    ``pairs``, a list of ``(stem, ir_path, vi_path)``, replaces the folders (pairs from several
    folders into one output). Images deeper than 8 bits are mapped by ``depth_range``
    (mmdrfuse.data.io). ``overwrite``: replace an earlier ``fuse`` output in ``out_dir``.

    Returns ``{"n", "seconds", "seconds_per_image", "wall_seconds", "device", "engine", "out_dir"}``
    where ``seconds`` is the network time only (no file I/O).
    """
    from tqdm import tqdm

    depth_range = parse_depth_range(depth_range)
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    if color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}, got {color!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
    wall_start = time.perf_counter()
    if pairs is None:
        if ir_dir is None or vi_dir is None:
            raise ValueError("fuse_folder needs ir_dir and vi_dir, or pairs")
        input_dirs = [ir_dir, vi_dir]
        pairs = _select_pairs(ir_dir, vi_dir, stems)
    else:
        pairs = [(str(stem), Path(ir), Path(vi)) for stem, ir, vi in pairs]
        if not pairs:
            raise DataError("no pairs to fuse")
        input_dirs = sorted({str(path.parent) for _, ir, vi in pairs for path in (ir, vi)})
    check_output_outside_inputs(out_dir, *input_dirs)
    check_output_folder(out_dir, COMMAND, overwrite=overwrite)
    sizes = _check_pairs(pairs, MIN_SIDE[model])
    paths = {stem: (ir, vi) for stem, ir, vi in pairs}

    torch_device = resolve_device(device)
    net = load_fusion_model(model, weights, torch_device)
    fast = None
    if engine == "fast" or (engine == "auto" and model == "student" and torch_device.type == "cpu"):
        if model != "student" or torch_device.type != "cpu":
            raise ValueError("--engine fast runs only the student on the CPU")
        fast = _load_fast_student(net)
        if fast is None and engine == "fast":
            raise RuntimeError("--engine fast needs mmdrfuse.fusion.fast_student, which is not available")
    engine_used = "fast" if fast is not None else "eager"

    out_dir = Path(out_dir)
    batches = _batches([stem for stem, _, _ in pairs], sizes, batch, MAX_BATCH_PIXELS[model])
    workers = workers or max(2, min(8, os.cpu_count() or 2))
    network_seconds = 0.0
    settings = {
        "model": model, "weights": _describe_weights(model, weights), "scaling": scaling, "color": color,
        "depth_range": depth_range, "engine": engine_used, "inputs": [str(Path(d).resolve()) for d in input_dirs],
        "images": len(pairs),
    }
    with atomic_directory(out_dir, command=COMMAND, settings=settings, overwrite=overwrite) as staging:
        with ThreadPoolExecutor(workers) as pool, tqdm(total=len(pairs), unit="img", disable=not progress, desc=f"fuse {model}") as bar:
            if fast is not None:
                # The fast kernel releases the GIL: each worker reads, fuses and writes one pair,
                # so decoding, fusing and encoding overlap on every core.
                def fuse_one(stem: str) -> float:
                    ir, vi, ycrcb = _read_pair(*paths[stem], color, depth_range)
                    start = time.perf_counter()
                    fused = fast(ir, vi)
                    spent = time.perf_counter() - start
                    _write_fused(staging / f"{stem}.png", fused, scaling, ycrcb)
                    return spent

                for spent in pool.map(fuse_one, [stem for stem, _, _ in pairs]):
                    network_seconds += spent
                    bar.update(1)
            else:
                def submit_reads(group: List[str]) -> List[Future]:
                    return [pool.submit(_read_pair, *paths[stem], color, depth_range) for stem in group]

                prefetch: Deque[Tuple[List[str], List[Future]]] = deque()
                upcoming = iter(batches)
                for group in upcoming:
                    prefetch.append((group, submit_reads(group)))
                    if len(prefetch) >= 2:
                        break
                writes: List[Future] = []
                while prefetch:
                    group, reads = prefetch.popleft()
                    following = next(upcoming, None)
                    if following is not None:
                        prefetch.append((following, submit_reads(following)))
                    decoded = [future.result() for future in reads]
                    start = time.perf_counter()
                    fused = _fuse_group(net, decoded)
                    network_seconds += time.perf_counter() - start
                    for stem, image, (_, _, ycrcb) in zip(group, fused, decoded):
                        writes.append(pool.submit(_write_fused, staging / f"{stem}.png", image, scaling, ycrcb))
                    for future in [w for w in writes if w.done()]:
                        future.result()
                    bar.update(len(group))
                for future in writes:
                    future.result()
    n = len(pairs)
    return {
        "n": n,
        "seconds": network_seconds,
        "seconds_per_image": network_seconds / n,
        "wall_seconds": time.perf_counter() - wall_start,
        "device": str(torch_device),
        "engine": engine_used,
        "out_dir": str(out_dir),
    }


def _describe_weights(model: str, weights: Optional[PathLike]) -> Dict[str, object]:
    """Path and SHA-256 of the weights file, for the output's manifest."""
    path = Path(weights) if weights is not None else default_weights(model)
    return {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _fuse_group(net: nn.Module, decoded: List[Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]) -> List[np.ndarray]:
    """Raw outputs for one group; shapes can still differ if a header lied (EXIF rotation), so split by shape."""
    by_shape: Dict[Tuple[int, ...], List[int]] = defaultdict(list)
    for index, (ir, _, _) in enumerate(decoded):
        by_shape[ir.shape].append(index)
    results: List[Optional[np.ndarray]] = [None] * len(decoded)
    for members in by_shape.values():
        fused = fuse_arrays(net, np.stack([decoded[i][0] for i in members]), np.stack([decoded[i][1] for i in members]))
        for i, image in zip(members, fused):
            results[i] = image
    return results
