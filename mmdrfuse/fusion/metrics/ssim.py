"""Differentiable SSIM, one implementation for training (dynamic refresh) and evaluation.

.. math::
    \\mathrm{SSIM}(x, y) = \\operatorname{mean}_{p}
        \\frac{(2\\mu_x\\mu_y + C_1)(2\\sigma_{xy} + C_2)}{(\\mu_x^2 + \\mu_y^2 + C_1)(\\sigma_x^2 + \\sigma_y^2 + C_2)},
    \\quad C_1 = (k_1 L)^2,\\ C_2 = (k_2 L)^2

with local statistics from a window slid over the "valid" region only (no padding).

* Dynamic refresh (NOTES.md): 11x11 Gaussian window, sigma 1.5, L = 1 on [0, 1] images.
* Fusion-paper evaluation (scikit-image ``structural_similarity`` defaults): 7x7 uniform
  window, sample covariance (N / (N - 1)), mean over the map with the 3-pixel border
  cropped, which is exactly the valid region, and ``data_range = 2``.
"""
from __future__ import annotations

import torch

from mmdrfuse.fusion.metrics.filters import box_mean, gaussian_kernel_1d, row_bands, separable_filter


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    window: str = "gaussian",
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    sample_covariance: bool = False,
) -> torch.Tensor:
    """Per-image SSIM of two batches of gray images.

    Args:
        x, y: (B, 1, H, W) tensors, H and W at least ``window_size``.
    Returns:
        (B,) tensor: the mean SSIM map of each image over the valid region.
    """
    if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"ssim expects two (B, 1, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"images of size {tuple(x.shape[-2:])} are smaller than the {window_size}x{window_size} window")
    if window not in ("gaussian", "uniform"):
        raise ValueError(f"window must be 'gaussian' or 'uniform', got {window!r}")
    total = 0.0
    for rows in row_bands(x, window_size):
        band = _ssim_map(x[..., rows, :], y[..., rows, :], data_range, window, window_size, sigma, k1, k2, sample_covariance)
        total = total + band.sum((1, 2, 3))
    return total / ((x.shape[-2] - window_size + 1) * (x.shape[-1] - window_size + 1))


def _ssim_map(x, y, data_range, window, window_size, sigma, k1, k2, sample_covariance) -> torch.Tensor:
    """The SSIM map of the 'valid' windows of one band of rows: (B, 1, H', W')."""
    kernel = gaussian_kernel_1d(window_size, sigma, dtype=x.dtype, device=x.device) if window == "gaussian" else None

    def local_mean(plane: torch.Tensor) -> torch.Tensor:
        return box_mean(plane, window_size) if kernel is None else separable_filter(plane, kernel, kernel)

    mu_x, mu_y, xx, yy, xy = (local_mean(plane) for plane in (x, y, x * x, y * y, x * y))
    cov_norm = window_size**2 / (window_size**2 - 1) if sample_covariance else 1.0
    mu_xy = mu_x * mu_y
    mu_sq = torch.addcmul(mu_x * mu_x, mu_y, mu_y)
    var_sum = (xx + yy - mu_sq) * cov_norm
    cov_xy = (xy - mu_xy) * cov_norm
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    return ((2 * mu_xy + c1) * (2 * cov_xy + c2)) / ((mu_sq + c1) * (var_sum + c2))


def ssim_fusion(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """Fusion-paper SSIM = SSIM(F, A) + SSIM(F, B) (values up to 2) on the 0..255 scale: (B,).

    scikit-image ``structural_similarity`` defaults with ``data_range=2`` (what older versions
    inferred for float input): 7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance,
    mean over the map without its 3-pixel border.
    """
    fused = fused.to(torch.float64)
    options = dict(data_range=2.0, window="uniform", window_size=7, sample_covariance=True)
    return ssim(fused, ir.to(torch.float64), **options) + ssim(fused, vi.to(torch.float64), **options)
