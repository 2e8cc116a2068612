"""Score fused images: the metric registry, one pair, a folder of pairs, several methods.

Two conventions (``convention=``):

* ``mmif`` (default): the Python evaluator of MMIF-CDDFuse, the paper's protocol. A = infrared
  (``ir``), B = visible (``vi``); every image is gray on the 0..255 scale (files are read with
  :func:`mmdrfuse.data.io.read_gray`).
* ``vifb``: the MATLAB code of the VIFB benchmark (:mod:`mmdrfuse.metrics.vifb`): images as
  stored (:func:`mmdrfuse.data.io.read_as_stored`, colour kept), VIFB's 13 metrics.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Sequence, Tuple

import numpy as np
import torch

from mmdrfuse.data.io import PathLike, check_same_size, image_size, list_images, match_pairs, read_as_stored, read_gray
from mmdrfuse.device import resolve_device
from mmdrfuse.errors import DataError
from mmdrfuse.metrics.no_reference import average_gradient, entropy, spatial_frequency, standard_deviation
from mmdrfuse.metrics.qabf import qabf
from mmdrfuse.metrics.source_referenced import (
    correlation_coefficient,
    mean_squared_error,
    mutual_information,
    peak_signal_to_noise_ratio,
    source_moments,
    sum_of_correlations_of_differences,
)
from mmdrfuse.metrics.ssim import ssim_fusion
from mmdrfuse.metrics.vif import vif_fusion
from mmdrfuse.metrics.vifb import LOWER_IS_BETTER as VIFB_LOWER_IS_BETTER
from mmdrfuse.metrics.vifb import VIFB_METRICS, vifb_scores

Metric = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

METRICS: Dict[str, Metric] = {
    "SD": lambda fused, ir, vi: standard_deviation(fused),
    "SCD": sum_of_correlations_of_differences,
    "VIF": vif_fusion,
    "Qabf": qabf,
    "SSIM": ssim_fusion,
    "CC": correlation_coefficient,
    "EN": lambda fused, ir, vi: entropy(fused),
    "SF": lambda fused, ir, vi: spatial_frequency(fused),
    "AG": lambda fused, ir, vi: average_gradient(fused),
    "MI": mutual_information,
    "MSE": mean_squared_error,
    "PSNR": peak_signal_to_noise_ratio,
}
# Metrics computed from the shared sums and Gram matrix of (A, B, F): evaluate_batch computes those once.
FROM_MOMENTS = {
    "SCD": sum_of_correlations_of_differences,
    "CC": correlation_coefficient,
    "MSE": mean_squared_error,
    "PSNR": peak_signal_to_noise_ratio,
}
ALL_METRICS: Tuple[str, ...] = tuple(METRICS)
PAPER_METRICS: Tuple[str, ...] = ("SD", "SCD", "VIF", "Qabf", "SSIM", "CC")
LOWER_IS_BETTER = frozenset({"MSE"}) | VIFB_LOWER_IS_BETTER
CONVENTIONS: Tuple[str, ...] = ("mmif", "vifb")


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose from {', '.join(CONVENTIONS)}")
    return convention


def parse_metrics(names: str | Sequence[str], convention: str = "mmif") -> Tuple[str, ...]:
    """``"SD,VIF"`` or a sequence -> canonical names of ``convention`` (case-insensitive; ``paper``,
    ``vifb`` and ``all`` (every metric of the convention) name groups); unknown names are a ValueError."""
    available = ALL_METRICS if check_convention(convention) == "mmif" else VIFB_METRICS
    if isinstance(names, str):
        names = [name for name in names.split(",") if name.strip()]
    groups = {"paper": PAPER_METRICS, "vifb": VIFB_METRICS, "all": available}
    names = [member for name in names for member in groups.get(name.strip().lower(), (name,))]
    by_lower = {name.lower(): name for name in available}
    unknown = [name for name in names if name.strip().lower() not in by_lower]
    if unknown:
        hint = " (VIFB's metrics need --convention vifb)" if convention == "mmif" and set(unknown) & set(VIFB_METRICS) else ""
        raise ValueError(
            f"unknown metric(s) {', '.join(unknown)} in the {convention} convention; choose from {','.join(available)}{hint}"
        )
    chosen = tuple(dict.fromkeys(by_lower[name.strip().lower()] for name in names))
    if not chosen:
        raise ValueError("no metrics given")
    return chosen


@contextlib.contextmanager
def _single_threaded_cpu() -> Iterator[None]:
    """The CPU path works on bands of about 1 MB: intra-op threads only add overhead there (and
    spin against other processes), so torch and OpenCV run single-threaded, restored afterwards."""
    import cv2

    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv2_threads)


def evaluate_batch(
    fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, metrics: Sequence[str] = ALL_METRICS
) -> Dict[str, torch.Tensor]:
    """Every metric of a batch: three float64 (B, 1, H, W) tensors on one device -> {name: (B,)}."""
    threads = _single_threaded_cpu() if fused.device.type == "cpu" else contextlib.nullcontext()
    with torch.no_grad(), threads:
        moments = source_moments(fused, ir, vi) if any(name in FROM_MOMENTS for name in metrics) else None
        return {
            name: FROM_MOMENTS[name](fused, ir, vi, moments=moments) if name in FROM_MOMENTS else METRICS[name](fused, ir, vi)
            for name in metrics
        }


def _as_tensor(image: np.ndarray, what: str) -> torch.Tensor:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{what} must be a 2-D gray image, got shape {image.shape}")
    return torch.from_numpy(image.astype(np.float64, copy=False))[None, None]


def evaluate_pair(
    fused: np.ndarray, ir: np.ndarray, vi: np.ndarray, metrics: Sequence[str] | None = None, *, convention: str = "mmif"
) -> Dict[str, float]:
    """Metrics of one fused image against its infrared (A) and visible (B) source.

    Args:
        fused, ir, vi: ``mmif``: (H, W) uint8 or float arrays of gray values on the 0..255 scale;
            ``vifb``: uint8 (H, W) gray or (H, W, 3) RGB arrays as stored.
        metrics: names of the convention (default: all of them).
    Returns:
        ``{name: value}`` in the order of ``metrics``.
    """
    metrics = parse_metrics("all" if metrics is None else metrics, convention)
    if convention == "vifb":
        with _single_threaded_cpu():
            return vifb_scores(np.asarray(vi), np.asarray(ir), np.asarray(fused), metrics)
    tensors = [_as_tensor(image, what) for image, what in ((fused, "fused"), (ir, "ir"), (vi, "vi"))]
    if not tensors[0].shape == tensors[1].shape == tensors[2].shape:
        raise ValueError(f"sizes differ: fused {fused.shape}, ir {ir.shape}, vi {vi.shape}")
    return {name: float(value[0]) for name, value in evaluate_batch(*tensors, metrics).items()}


def plan_pairs(
    fused_dir: PathLike, ir_dir: PathLike, vi_dir: PathLike, *, allow_missing: bool = False
) -> Tuple[List[Tuple[str, Path, Path, Path]], List[str]]:
    """Match fused, infrared and visible images by stem and check their sizes from the file headers.

    Returns ``(triples, skipped)``: ``(stem, fused, ir, vi)`` sorted by stem and a message per
    skipped image. Unless ``allow_missing``, any problem (an image without its partners, a
    size mismatch) is a DataError listing every one of them. Unreadable files are always errors.
    """
    sources, skipped = match_pairs(ir_dir, vi_dir, allow_missing=True)
    fused = list_images(fused_dir)
    source_stems = {stem for stem, _, _ in sources}
    skipped += [f"{path} has no source pair in {ir_dir} and {vi_dir}" for stem, path in fused.items() if stem not in source_stems]
    triples = []
    for stem, ir_path, vi_path in sources:
        if stem not in fused:
            skipped.append(f"{stem}: no fused image in {fused_dir} for {ir_path.name} / {vi_path.name}")
            continue
        paths = (fused[stem], ir_path, vi_path)
        sizes = [image_size(path) for path in paths]
        if len(set(sizes)) > 1:
            described = ", ".join(f"{path} is {w}x{h}" for path, (w, h) in zip(paths, sizes))
            skipped.append(f"{stem}: size mismatch: {described}")
            continue
        triples.append((stem, *paths))
    if skipped and not allow_missing:
        listing = "\n  ".join(skipped)
        raise DataError(f"{len(skipped)} problem(s) with the image pairs (--allow-missing skips them):\n  {listing}")
    if not triples:
        raise DataError(f"no complete (fused, ir, vi) triple in {fused_dir}, {ir_dir}, {vi_dir}")
    return triples, skipped


def _batches(
    triples: Sequence[Tuple[str, Path, Path, Path]], batch_size: int
) -> Iterator[Tuple[List[str], List[np.ndarray]]]:
    """Consecutive triples of one image size, at most ``batch_size`` at a time, read as gray."""
    stems: List[str] = []
    images: List[np.ndarray] = []
    for stem, *paths in triples:
        gray = [read_gray(path) for path in paths]
        for path, image in zip(paths[1:], gray[1:]):  # the header check cannot see EXIF rotations
            check_same_size(gray[0], image, paths[0], path)
        triple = np.stack(gray)
        if images and (len(images) == batch_size or images[0].shape != triple.shape):
            yield stems, images
            stems, images = [], []
        stems.append(stem)
        images.append(triple)
    if images:
        yield stems, images


def _score_mmif(triples, metrics: Sequence[str], torch_device, batch_size: int, fused_dir: PathLike, bar) -> List[dict]:
    """The default convention's metrics of every (stem, fused, ir, vi) triple, read as gray, in batches."""
    rows: List[dict] = []
    for stems, images in _batches(triples, batch_size):
        stack = torch.from_numpy(np.stack(images)).to(torch_device, torch.float64)
        try:
            scores = evaluate_batch(stack[:, 0:1], stack[:, 1:2], stack[:, 2:3], metrics)
        except ValueError as error:  # e.g. an image too small for VIF's four scales
            raise DataError(f"cannot score {', '.join(stems)} in {fused_dir}: {error}") from error
        scores = {name: values.cpu().tolist() for name, values in scores.items()}
        rows += [{"name": stem, **{name: scores[name][i] for name in metrics}} for i, stem in enumerate(stems)]
        bar.update(len(stems))
    return rows


def _score_vifb(triples: Sequence[Tuple[str, Path, Path, Path]], metrics: Sequence[str], bar) -> List[dict]:
    """VIFB's metrics of every (stem, fused, ir, vi) triple, the images read as stored (on the CPU)."""
    rows = []
    with _single_threaded_cpu():
        for stem, *paths in triples:
            fused, ir, vi = (read_as_stored(path) for path in paths)
            for path, image in zip(paths[1:], (ir, vi)):  # the header check cannot see every file
                check_same_size(fused, image, paths[0], path)
            try:
                scores = vifb_scores(vi, ir, fused, metrics)
            except ValueError as error:  # e.g. a colour fused image with a gray visible image
                raise DataError(f"cannot score {paths[0]} (ir {paths[1]}, vi {paths[2]}) in the vifb convention: {error}") from error
            rows.append({"name": stem, **scores})
            bar.update(1)
    return rows


def evaluate_folders(
    fused_dir: PathLike,
    ir_dir: PathLike,
    vi_dir: PathLike,
    *,
    metrics: Sequence[str] | None = None,
    allow_missing: bool = False,
    progress: bool = True,
    device: str = "cpu",
    batch_size: int = 8,
    convention: str = "mmif",
) -> dict:
    """Score every fused image in ``fused_dir`` against the sources of the same stem.

    Returns ``{"n": N, "mean": {metric: value}, "per_image": [{"name": stem, metric: value, ...}],
    "skipped": [message, ...]}``. On CUDA, images of one size are scored ``batch_size`` at a time.
    ``metrics``: names of ``convention`` (default: all of them); ``vifb`` runs on the CPU only.
    """
    from tqdm import tqdm

    metrics = parse_metrics("all" if metrics is None else metrics, convention)
    if convention == "vifb" and str(device) not in ("cpu", "auto"):
        raise ValueError(f"the vifb convention runs on the CPU only, not --device {device}")
    torch_device = resolve_device(device if convention == "mmif" else "cpu")
    if torch_device.type == "cpu":
        batch_size = 1
    triples, skipped = plan_pairs(fused_dir, ir_dir, vi_dir, allow_missing=allow_missing)
    with tqdm(total=len(triples), desc=f"evaluate {Path(fused_dir).name}", unit="image", disable=not progress) as bar:
        if convention == "vifb":
            per_image = _score_vifb(triples, metrics, bar)
        else:
            per_image = _score_mmif(triples, metrics, torch_device, batch_size, fused_dir, bar)
    mean = {name: _mean([row[name] for row in per_image], convention) for name in metrics}
    return {"n": len(per_image), "mean": mean, "per_image": per_image, "skipped": skipped}


def _mean(values: Sequence[float], convention: str) -> float:
    """The mean over images; VIFB's ``compute_metrics.m`` takes ``nanmean`` (a NaN Qcb of a flat image is left out)."""
    if convention == "vifb" and not all(np.isnan(values)):
        return float(np.nanmean(values))
    return float(np.mean(values))


def evaluate_methods(
    methods: Mapping[str, PathLike], ir_dir: PathLike, vi_dir: PathLike, **options
) -> dict:
    """:func:`evaluate_folders` for each ``{method name: fused folder}``: ``{"methods": {name: result}}``."""
    return {"methods": {name: evaluate_folders(folder, ir_dir, vi_dir, **options) for name, folder in methods.items()}}

