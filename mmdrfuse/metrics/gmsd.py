"""Differentiable GMSD (Xue et al., 2014), as used by dynamic refresh (lower is better).

.. math::
    \\mathrm{GMS}(p) = \\frac{2 m_x(p) m_y(p) + c}{m_x(p)^2 + m_y(p)^2 + c}, \\quad
    \\mathrm{GMSD} = \\operatorname{std}_p \\mathrm{GMS}(p)

where :math:`m` is the Prewitt gradient magnitude (kernels with 1/3 weights, zero padding)
of the image scaled to 0..255, averaged over 2x2 blocks and subsampled by 2; c = 170.
The standard deviation is the unbiased one (MATLAB ``std2``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_PREWITT_X = torch.tensor([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]]) / 3.0


def _gradient_magnitude(image: torch.Tensor) -> torch.Tensor:
    kernel_x = _PREWITT_X.to(dtype=image.dtype, device=image.device)
    kernels = torch.stack([kernel_x, kernel_x.t()])[:, None]
    grad = F.conv2d(image, kernels, padding=1)
    return torch.sqrt(grad.pow(2).sum(1, keepdim=True) + 1e-12)


def gmsd(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, c: float = 170.0) -> torch.Tensor:
    """Per-image GMSD of two batches of gray images.

    Args:
        x, y: (B, 1, H, W) tensors with values in [0, ``data_range``]; H, W >= 4.
    Returns:
        (B,) tensor; 0 for identical images.
    """
    if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"gmsd expects two (B, 1, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    scale = 255.0 / data_range
    x = F.avg_pool2d(x * scale, 2)
    y = F.avg_pool2d(y * scale, 2)
    mx, my = _gradient_magnitude(x), _gradient_magnitude(y)
    gms = (2 * mx * my + c) / (mx.pow(2) + my.pow(2) + c)
    return gms.flatten(1).std(1)
