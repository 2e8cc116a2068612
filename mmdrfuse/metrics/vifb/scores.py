"""VIFB's 13 metrics of one (visible, infrared, fused) triple: the per-channel loop and the pixel statistics.

Per channel triple (a = visible, b = infrared, f = fused, N = H W pixels; see
:mod:`mmdrfuse.metrics.vifb.channels` for the colour rules):

* EN :math:`= -\\sum_v p_f(v) \\log_2 p_f(v)` (256-bin histogram of ``floor(f)``).
* CE :math:`= \\tfrac12 (\\mathrm{KL}(p_a \\| p_f) + \\mathrm{KL}(p_b \\| p_f))` in bits, bins where
  either probability is 0 skipped.
* MI :math:`= I(a; f) + I(b; f)` in nats, each image first min-max scaled to 0..255 and rounded
  (a constant image maps to 0).
* SD: the population standard deviation of f.
* RMSE :math:`= \\tfrac12 (m(a, f) + m(b, f))` with VIFB's own
  :math:`m(x, f) = \\sqrt{\\sum (x - f)^2} / N` (a root of a sum, not of a mean); PSNR
  :math:`= 20 \\log_{10}(255 / \\sqrt{\\mathrm{RMSE}})` (+inf for f = a = b).
* SSIM :math:`= \\mathrm{SSIM}(a, f) + \\mathrm{SSIM}(b, f)`: Wang's reference code, 11x11
  Gaussian window of sigma 1.5, valid windows only, L = 255, population moments.
* Qabf: Xydeas-Petrovic on the three channels (see :mod:`mmdrfuse.metrics.qabf`).
* Qcb, Qcv: :mod:`mmdrfuse.metrics.vifb.chen`.

AG, EI and SF look at the fused image only and handle its channels themselves:

* AG: per channel, MATLAB's ``gradient`` (central differences, one-sided at the border),
  :math:`\\sum \\sqrt{(g_x^2 + g_y^2) / 2} / ((H - 1)(W - 1))`, averaged over channels.
* EI: the mean over all pixels and channels of the Sobel magnitude (``imfilter(...,'replicate')``).
* SF: ``[m, n] = size(f)`` of an RGB array gives n = 3W, and MATLAB's two-index ``f(i, j)`` walks the
  channels side by side: SF is that of the (H, 3W) image [R G B], the two seams included.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from mmdrfuse.metrics import native_sums
from mmdrfuse.metrics.filters import gaussian_kernel_1d
from mmdrfuse.metrics.qabf import qabf_numpy_many
from mmdrfuse.metrics.ssim import ssim_means_numpy_many
from mmdrfuse.metrics.vifb.channels import channel_triples, check_triple, colour_planes, rgb2gray
from mmdrfuse.metrics.vifb.chen import chen_metrics

VIFB_METRICS: Tuple[str, ...] = ("CE", "EN", "MI", "PSNR", "AG", "EI", "Qabf", "SD", "SF", "RMSE", "SSIM", "Qcb", "Qcv")
LOWER_IS_BETTER = frozenset({"CE", "RMSE", "Qcv"})
FUSED_ONLY = ("AG", "EI", "SF")
# In a gray fused image's branch the metrics convert colour sources with rgb2gray: rounded to uint8
# where MATLAB passes the uint8 image on (CE, MI, SSIM), unrounded where the wrapper or metric has
# made it double first (PSNR, RMSE, Qabf). Qcb and Qcv fail in MATLAB on colour sources there.
FAILS_ON_COLOUR_SOURCES = ("Qcb", "Qcv")
# Wang's SSIM as VIFB runs it: 11x11 Gaussian of sigma 1.5, C_1 = (0.01 L)^2, C_2 = (0.03 L)^2, L = 255.
_SSIM_KERNEL = gaussian_kernel_1d(11, 1.5).numpy()
_SSIM_CONSTANTS = ((0.01 * 255) ** 2, (0.03 * 255) ** 2)


def _histogram(image: np.ndarray) -> np.ndarray:
    """256-bin histogram of an integer image on 0..255 (float64 counts)."""
    if image.dtype != np.uint8:
        if not np.array_equal(image, np.floor(image)) or image.min() < 0 or image.max() > 255:
            raise ValueError("VIFB's histograms need integer images on 0..255")
        image = image.astype(np.uint8)
    counts = native_sums.histogram(image) if image.strides[1] == 1 else None
    return cv2.calcHist([image], [0], None, [256], [0, 256]).ravel().astype(np.float64) if counts is None else counts


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts != 0] / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def _cross_entropy(source_counts: np.ndarray, fused_counts: np.ndarray, pixels: int) -> float:
    p1, p2 = source_counts / pixels, fused_counts / pixels
    both = (p1 != 0) & (p2 != 0)
    return float(np.sum(p1[both] * np.log2(p1[both] / p2[both])))


def _levels(image: np.ndarray) -> np.ndarray:
    """VIFB's mutinf: min-max to [0, 1], then int16(x * 255) (round half away from zero), as uint8."""
    data = image if image.dtype == np.uint8 else image.astype(np.float64)
    low, high = float(data.min()), float(data.max())
    if high == low:
        return np.zeros(image.shape, np.uint8)
    if image.dtype == np.uint8:  # the same arithmetic per value, through a table
        table = np.floor((np.arange(256.0) - low) / (high - low) * 255 + 0.5).clip(0, 255).astype(np.uint8)
        return cv2.LUT(image, table)
    return np.floor((data - low) / (high - low) * 255 + 0.5).astype(np.uint8)


def _mutual_information(x_levels: np.ndarray, y_levels: np.ndarray) -> float:
    if x_levels.strides == y_levels.strides and x_levels.strides[1] == 1:  # LUT and zeros give contiguous levels
        nats = native_sums.mutual_information(x_levels, y_levels)
        if nats is not None:
            return nats
    joint = cv2.calcHist([x_levels, y_levels], [0, 1], None, [256, 256], [0, 256, 0, 256]).astype(np.float64)
    total = joint.sum()

    def nats(counts):
        p = counts[counts != 0] / total
        return float(-np.sum(p * np.log(p)))

    return nats(joint.sum(1)) + nats(joint.sum(0)) - nats(joint)


def _root_sum_squares(x: np.ndarray, f: np.ndarray) -> float:
    """VIFB's ``mse``: sqrt(sum((x - f)^2)) / N."""
    if x.dtype != f.dtype:
        x, f = x.astype(np.float64), f.astype(np.float64)
    return cv2.norm(x, f, cv2.NORM_L2) / x.size


def _qabf(triples) -> list:
    """Qabf of each channel triple (vi, ir, fused), all in one pass: an image shared by several triples
    (see :func:`_share_equal`) has its Sobel maps computed once."""
    exact = [[rgb2gray(image, rounded=False) for image in (vi, ir)] for vi, ir, _ in triples]
    # With zero padding only all-black sources have no edge: then MATLAB's 0 / 0 (mmif defines 0).
    edges = [np.any(vi) or np.any(ir) for vi, ir in exact]
    # qabf's CPU path itself, without the round trip through float64 tensors
    values = iter(qabf_numpy_many([(triple[2], ir, vi) for triple, (vi, ir), edge in zip(triples, exact, edges) if edge]))
    return [next(values) if edge else math.nan for edge in edges]


def _ssim(triples) -> list:
    """SSIM of each channel triple (vi, ir, fused): SSIM(f, a) + SSIM(f, b), all in one pass (an image
    shared by several triples has its local moments computed once): in C where every plane is
    uint8 (:func:`mmdrfuse.metrics.native_sums.ssim_sums`), else through float64 planes."""
    gray = [[rgb2gray(image, rounded=True) for image in (fused, vi, ir)] for vi, ir, fused in triples]
    distinct = {id(image): image for images in gray for image in images}
    if all(image.dtype == np.uint8 for image in distinct.values()):
        planes = [np.ascontiguousarray(image) for image in distinct.values()]
        index = {key: i for i, key in enumerate(distinct)}
        pairs = [(index[id(fused)], index[id(source)]) for fused, *sources in gray for source in sources]
        sums = native_sums.ssim_sums(planes, pairs, _SSIM_KERNEL, *_SSIM_CONSTANTS)
        if sums is not None:
            border = _SSIM_KERNEL.shape[0] - 1
            count = (planes[0].shape[0] - border) * (planes[0].shape[1] - border)
            return [(sums[2 * t] + sums[2 * t + 1]) / count for t in range(len(triples))]
    planes = {key: np.asarray(image, dtype=np.float64) for key, image in distinct.items()}
    groups = [(planes[id(fused)], [planes[id(vi)], planes[id(ir)]]) for fused, vi, ir in gray]
    means = ssim_means_numpy_many(groups, 255.0, "gaussian", 11, 1.5, 0.01, 0.03, False)
    return [float(sum(pair)) for pair in means]


def _share_equal(triples) -> list:
    """The triples with every plane equal to an earlier one replaced by that earlier array (the three
    channels of a gray image stored as RGB, as 17 of VIFB's 21 infrared images are), so that work
    on it is done once. A first row compared first: distinct channels differ at once."""
    seen: list = []

    def shared(image: np.ndarray) -> np.ndarray:
        for known in seen:
            if known is image or (known.shape == image.shape and known.dtype == image.dtype
                                  and np.array_equal(known[0], image[0]) and np.array_equal(known, image)):
                return known
        seen.append(image)
        return image

    return [tuple(shared(image) for image in triple) for triple in triples]


def _channel_scores(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray, names: Sequence[str], memo: dict) -> Dict[str, float]:
    """The source-referenced metrics but SSIM, Qabf, Qcb and Qcv, and SD / EN, of one channel triple (fused (H, W);
    sources may be RGB only in a gray fused image's branch). ``memo``: the histograms and MI levels
    of the call's images, by array (a plane shared by the triples, see :func:`_share_equal`, is counted once)."""

    def once(function, image):
        key = (function, id(image))
        if key not in memo:
            memo[key] = (image, function(image))  # the image kept: its id stays its own
        return memo[key][1]

    if vi.ndim == 3 or ir.ndim == 3:
        failing = [name for name in names if name in FAILS_ON_COLOUR_SOURCES]
        if failing:
            raise ValueError(f"VIFB's {', '.join(failing)} fail(s) in MATLAB on a gray fused image with colour sources")
    rounded = [rgb2gray(image, rounded=True) for image in (vi, ir)]
    exact = [rgb2gray(image, rounded=False) for image in (vi, ir)]
    out: Dict[str, float] = {}
    pixels = fused.size
    if any(name in names for name in ("EN", "CE", "SD")):
        fused_counts = once(_histogram, fused)
        if "EN" in names:
            out["EN"] = _entropy_bits(fused_counts)
        if "CE" in names:
            out["CE"] = sum(_cross_entropy(once(_histogram, source), fused_counts, pixels) for source in rounded) / 2.0
        if "SD" in names:
            values = np.arange(256.0)
            mean = float(values @ fused_counts) / pixels
            out["SD"] = math.sqrt(float(((values - mean) ** 2) @ fused_counts) / pixels)
    if "MI" in names:
        fused_levels = once(_levels, fused)
        out["MI"] = sum(_mutual_information(once(_levels, source), fused_levels) for source in rounded)
    if "PSNR" in names or "RMSE" in names:
        rmse = sum(_root_sum_squares(source, fused) for source in exact) / 2.0
        if "RMSE" in names:
            out["RMSE"] = rmse
        if "PSNR" in names:
            out["PSNR"] = 20 * math.log10(255 / math.sqrt(rmse)) if rmse > 0 else math.inf
    return out


def _bands(fused: np.ndarray) -> list:
    """The channels of the fused image; uint8 ones as contiguous planes (what the C sums take)."""
    if fused.ndim == 2:
        return [np.ascontiguousarray(fused) if fused.dtype == np.uint8 else fused]
    return colour_planes(fused)


def _gradient(band: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """MATLAB's ``gradient`` along x (dx = 1) or y (dy = 1): (f[j+1] - f[j-1]) / 2 inside,
    f[1] - f[0] and f[-1] - f[-2] on the border (a replicated border gives twice those, halved back)."""
    out = cv2.Sobel(band, cv2.CV_64F, dx, dy, ksize=1, scale=0.5, borderType=cv2.BORDER_REPLICATE)
    edges = (slice(None), [0, -1]) if dx else ([0, -1], slice(None))
    out[edges] *= 2
    return out


def average_gradient(fused: np.ndarray, bands: Optional[list] = None) -> float:
    """AG of ``fused``; ``bands``: its channels as :func:`_bands` gives them, when already split."""
    rows, cols = fused.shape[:2]
    values = []
    for band in _bands(fused) if bands is None else bands:
        total = native_sums.gradient_sum(band) if band.dtype == np.uint8 else None
        if total is None:
            band = band if band.dtype == np.uint8 else band.astype(np.float64)
            # sqrt((gx^2 + gy^2) / 2) = |(gx, gy)| / sqrt(2); cv2.magnitude is the exact float64 root.
            magnitude = cv2.magnitude(_gradient(band, 1, 0), _gradient(band, 0, 1))
            total = cv2.sumElems(magnitude)[0] / math.sqrt(2)
        values.append(total / ((rows - 1) * (cols - 1)))
    return float(np.mean(values))


def edge_intensity(fused: np.ndarray, bands: Optional[list] = None) -> float:
    """EI of ``fused``; ``bands`` as in :func:`average_gradient`."""
    total = 0.0
    for band in _bands(fused) if bands is None else bands:
        native_total = native_sums.sobel_sum(band) if band.dtype == np.uint8 else None
        if native_total is not None:
            total += native_total
            continue
        band = band if band.dtype == np.uint8 else band.astype(np.float64)
        gx = cv2.Sobel(band, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
        gy = cv2.Sobel(band, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
        total += cv2.sumElems(cv2.magnitude(gx, gy))[0]
    return total / fused.size


def spatial_frequency(fused: np.ndarray, bands: Optional[list] = None) -> float:
    """SF of ``fused``; ``bands`` as in :func:`average_gradient`."""
    bands = _bands(fused) if bands is None else bands
    sums = [native_sums.difference_sums(band) if band.dtype == np.uint8 else None for band in bands]
    if all(pair is not None for pair in sums):
        # The wide image's sums band by band plus its seams: sums of squared 8-bit differences,
        # exact integers, so the same value as from the wide image.
        seams = sum(float(np.sum(np.square(left[:, -1].astype(np.int64) - right[:, 0])))
                    for left, right in zip(bands, bands[1:]))
        changes = sum(across + down for across, down in sums) + seams
        return math.sqrt(changes / (fused.shape[0] * fused.shape[1] * len(bands)))
    wide = np.concatenate(bands, axis=1).astype(np.float64)
    row_changes = cv2.norm(wide[:, 1:], wide[:, :-1], cv2.NORM_L2SQR)
    column_changes = cv2.norm(wide[1:], wide[:-1], cv2.NORM_L2SQR)
    return math.sqrt((row_changes + column_changes) / wide.size)


def vifb_scores(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray, metrics: Sequence[str] = VIFB_METRICS) -> Dict[str, float]:
    """VIFB's metrics of one triple, in the order of ``metrics``.

    Args:
        vi, ir, fused: uint8 (H, W) gray or (H, W, 3) RGB arrays (RGB order, as MATLAB reads them).
        metrics: names from :data:`VIFB_METRICS`.
    Raises:
        ValueError: for a combination VIFB's MATLAB code cannot score (see
            :mod:`mmdrfuse.metrics.vifb.channels`), or images of different sizes.
    """
    unknown = [name for name in metrics if name not in VIFB_METRICS]
    if unknown:
        raise ValueError(f"unknown VIFB metric(s) {', '.join(unknown)}; choose from {','.join(VIFB_METRICS)}")
    check_triple(vi, ir, fused)
    if min(fused.shape[:2]) < 11:
        raise ValueError(f"images of size {fused.shape[:2]} are smaller than SSIM's 11x11 window")
    out: Dict[str, float] = {}
    bands = _bands(fused)  # split once (contiguous planes are faster for everything below), shared
    for name, function in (("AG", average_gradient), ("EI", edge_intensity), ("SF", spatial_frequency)):
        if name in metrics:
            out[name] = function(fused, bands)
    per_channel = [name for name in metrics if name not in FUSED_ONLY]
    if per_channel:
        triples = _share_equal(channel_triples(vi, ir, fused, fused_planes=bands if fused.ndim == 3 else None))
        memo: dict = {}
        scores = [_channel_scores(a, b, f, per_channel, memo) for a, b, f in triples]
        for name, function in (("SSIM", _ssim), ("Qabf", _qabf)):
            if name in per_channel:
                for score, value in zip(scores, function(triples)):
                    score[name] = value
        chen = [name for name in per_channel if name in FAILS_ON_COLOUR_SOURCES]
        if chen:  # all channels at once: they share buffers and repeated images
            for score, chen_scores in zip(scores, chen_metrics(triples, chen)):
                score.update(chen_scores)
        out.update({name: float(np.mean([score[name] for score in scores])) for name in per_channel})
    return {name: out[name] for name in metrics}
