"""Metrics of the fused image F against the two sources A (infrared) and B (visible): CC, SCD, MI, MSE, PSNR.

Every function takes three float (B, 1, H, W) tensors of gray values on the 0..255 scale,
``(fused, ir, vi)``, and returns a (B,) float64 tensor.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from mmdrfuse.metrics import filters
from mmdrfuse.metrics.no_reference import check_gray_batch

# Coefficient vectors of linear combinations of the planes (A, B, F) in source_moments' order.
_A, _B, _F = torch.eye(3, dtype=torch.float64).unbind(0)
_CONSTANT_TOLERANCE = 1e-12  # centred energy below this fraction of the raw energy is rounding noise


def source_moments(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums (B, 3) and Gram matrix of sums of products (B, 3, 3) of the planes (A, B, F).

    For 8-bit images every product and partial sum is an integer below 2**53, so both are exact
    in float64 and so is every quantity derived from them without centring (MSE).
    """
    check_gray_batch(fused, ir, vi, min_size=1)
    planes = [image.flatten(1).to(torch.float64) for image in (ir, vi, fused)]
    sums = torch.stack([plane.sum(1) for plane in planes], 1)
    gram = sums.new_empty(sums.shape[0], 3, 3)
    for i in range(3):
        for j in range(i, 3):
            products = (planes[i].unsqueeze(1) @ planes[j].unsqueeze(2)).flatten()
            gram[:, i, j] = gram[:, j, i] = products
    return sums, gram


def _quadratic(matrix: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    u, v = u.to(matrix.device), v.to(matrix.device)
    return torch.einsum("i,bij,j->b", u, matrix, v)


def correlation_of_combinations(sums: torch.Tensor, gram: torch.Tensor, n: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the images u . (A, B, F) and v . (A, B, F) from their moments: (B,).

    .. math:: r(x, y) = \\frac{\\sum_p (x - \\bar x)(y - \\bar y)}{\\sqrt{\\sum_p (x - \\bar x)^2 \\sum_p (y - \\bar y)^2}}

    Undefined when either image is constant (e.g. F - B when F = B); it is then defined as 0
    (no linear relation can be measured) where the NumPy formula gives NaN. "Constant" means
    centred energy at most 1e-12 of the raw energy, i.e. zero up to float64 rounding.
    """
    centred = gram - sums.unsqueeze(2) * sums.unsqueeze(1) / n
    covariance = _quadratic(centred, u, v)
    variance_u, variance_v = _quadratic(centred, u, u), _quadratic(centred, v, v)
    constant = (variance_u <= _CONSTANT_TOLERANCE * _quadratic(gram, u, u)) | (
        variance_v <= _CONSTANT_TOLERANCE * _quadratic(gram, v, v)
    )
    denominator = torch.sqrt((variance_u * variance_v).clamp(min=torch.finfo(torch.float64).tiny))
    return torch.where(constant, 0.0, covariance / denominator)


def correlation_coefficient(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, *, moments=None) -> torch.Tensor:
    """CC: mean correlation of the fused image with each source.

    .. math:: \\mathrm{CC} = \\tfrac{1}{2} \\big(r(F, A) + r(F, B)\\big)

    A constant image contributes r = 0 (see :func:`correlation_of_combinations`). ``moments``:
    :func:`source_moments` of the same images, when already computed.
    """
    sums, gram = moments or source_moments(fused, ir, vi)
    n = fused[0].numel()
    return (correlation_of_combinations(sums, gram, n, _A, _F) + correlation_of_combinations(sums, gram, n, _B, _F)) / 2


def sum_of_correlations_of_differences(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, *, moments=None) -> torch.Tensor:
    """SCD (Aslantas and Bendes, 2015): how much of each source the fused image adds to the other.

    .. math:: \\mathrm{SCD} = r(A, F - B) + r(B, F - A)

    Where ``F - B`` or ``A`` is constant (e.g. F = B) that term is 0 (see :func:`correlation_of_combinations`).
    ``moments`` as in :func:`correlation_coefficient`.
    """
    sums, gram = moments or source_moments(fused, ir, vi)
    n = fused[0].numel()
    return correlation_of_combinations(sums, gram, n, _A, _F - _B) + correlation_of_combinations(sums, gram, n, _B, _F - _A)


def _labels(image: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Bin labels of one flattened image, one per distinct value, and the number of labels.

    Integer values in 0..255 are their own labels (empty bins add nothing); other values are
    ranked with ``torch.unique``.
    """
    labels = image.to(torch.int32)
    if torch.equal(labels.to(image.dtype), image) and int(labels.min()) >= 0 and int(labels.max()) <= 255:
        return labels, 256
    _, labels = torch.unique(image, return_inverse=True)
    return labels.to(torch.int64), int(labels.max()) + 1


def _mutual_information_of_labels(x_labels: torch.Tensor, x_bins: int, y_labels: torch.Tensor, y_bins: int) -> torch.Tensor:
    index = x_labels.to(torch.int64) * y_bins + y_labels if x_bins * y_bins >= 2**31 else x_labels * y_bins + y_labels
    joint = torch.bincount(index, minlength=x_bins * y_bins).reshape(x_bins, y_bins)
    joint = joint.to(torch.float64) / x_labels.numel()
    outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    nonzero = joint > 0
    return (joint[nonzero] * torch.log(joint[nonzero] / outer[nonzero])).sum().clamp(min=0.0)


def _8bit_levels(*images: torch.Tensor):
    """The flattened CPU images as (1, N) uint8 arrays when all hold only integers in 0..255 and
    the histogram counts fit float32 exactly (OpenCV's histograms), else None."""
    if images[0].device.type != "cpu" or images[0].numel() >= 2**24:
        return None
    levels = [filters.uint8_if_exact(image.detach().to(torch.float64).numpy()[None]) for image in images]
    return None if any(level is None for level in levels) else levels


def _mutual_information_of_histogram(x: np.ndarray, y: np.ndarray) -> torch.Tensor:
    """Mutual information (nats) of two (1, N) uint8 arrays from their 256 x 256 joint histogram."""
    joint = cv2.calcHist([x, y], [0, 1], None, [256, 256], [0, 256, 0, 256]).astype(np.float64) / x.size
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return torch.tensor(max(0.0, float((joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])).sum())), dtype=torch.float64)


def mutual_information(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """MI: information the fused image shares with each source, in nats.

    .. math:: \\mathrm{MI} = I(F; A) + I(F; B)
    """
    check_gray_batch(fused, ir, vi, min_size=1)
    values = []
    for f, a, b in zip(fused.flatten(1), ir.flatten(1), vi.flatten(1)):
        levels = _8bit_levels(f, a, b)
        if levels is not None:
            fused_levels, *sources = levels
            values.append(sum(_mutual_information_of_histogram(fused_levels, source) for source in sources))
            continue
        fused_labels = _labels(f)
        values.append(
            _mutual_information_of_labels(*fused_labels, *_labels(a)) + _mutual_information_of_labels(*fused_labels, *_labels(b))
        )
    return torch.stack(values)


def mean_squared_error(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, *, moments=None) -> torch.Tensor:
    """MSE: mean of the two sources' mean squared differences from the fused image (lower is better).

    .. math:: \\mathrm{MSE} = \\tfrac{1}{2} \\big(\\operatorname{mean}_p (A - F)^2 + \\operatorname{mean}_p (B - F)^2\\big)

    ``moments`` as in :func:`correlation_coefficient`.
    """
    sums, gram = moments or source_moments(fused, ir, vi)
    n = fused[0].numel()
    return (_quadratic(gram, _A - _F, _A - _F) + _quadratic(gram, _B - _F, _B - _F)).clamp(min=0) / (2 * n)


def peak_signal_to_noise_ratio(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor, *, moments=None) -> torch.Tensor:
    """PSNR in dB with the fused image's own maximum as the peak (not 255), as fusion papers print it.

    .. math:: \\mathrm{PSNR} = 10 \\log_{10} \\frac{\\max_p F(p)^2}{\\mathrm{MSE}}

    +inf when MSE = 0 (F = A = B) and -inf when F is all zero but MSE > 0.
    """
    mse = mean_squared_error(fused, ir, vi, moments=moments)
    peak = fused.flatten(1).amax(1).to(torch.float64)
    return 10 * torch.log10(torch.where(mse > 0, peak.square() / mse, math.inf))
