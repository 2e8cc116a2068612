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
import torch.nn.functional as F


def _window(kind: str, size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if kind == "gaussian":
        coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        g = torch.exp(-(coords**2) / (2 * sigma**2))
        g = g / g.sum()
        w = g[:, None] * g[None, :]
    elif kind == "uniform":
        w = torch.full((size, size), 1.0 / size**2, dtype=torch.float64)
    else:
        raise ValueError(f"window must be 'gaussian' or 'uniform', got {kind!r}")
    return w.to(dtype=dtype, device=device)[None, None]


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
    w = _window(window, window_size, sigma, x.dtype, x.device)
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    b = x.shape[0]
    stats = F.conv2d(stacked.reshape(b * 5, 1, *x.shape[-2:]), w).reshape(b, 5, *(s - window_size + 1 for s in x.shape[-2:]))
    mu_x, mu_y, xx, yy, xy = stats.unbind(1)
    cov_norm = window_size**2 / (window_size**2 - 1) if sample_covariance else 1.0
    var_x = cov_norm * (xx - mu_x * mu_x)
    var_y = cov_norm * (yy - mu_y * mu_y)
    cov_xy = cov_norm * (xy - mu_x * mu_y)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)
