"""Qabf: gradient-based fusion performance (Xydeas and Petrovic, 2000), Piella-Heijmans constants.

Edge strength and orientation from Sobel responses (true 2-D convolution, zero padding, same size)
with :math:`h_x = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]` and :math:`h_y = [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]`:

.. math::
    g = \\sqrt{s_x^2 + s_y^2}, \\quad \\alpha = \\arctan(s_y / s_x)\\ (\\pi/2 \\text{ where } s_x = 0)

For a source S and the fused image F, the relative strength and orientation and the preserved
edge information are

.. math::
    G^{SF} = \\frac{\\min(g_S, g_F)}{\\max(g_S, g_F)}\\ (g_F \\text{ where } g_S = g_F), \\quad
    A^{SF} = 1 - \\frac{|\\alpha_S - \\alpha_F|}{\\pi / 2}, \\\\
    Q^{SF} = \\frac{T_g}{1 + e^{k_g (G^{SF} - D_g)}} \\cdot \\frac{T_a}{1 + e^{k_a (A^{SF} - D_a)}}, \\quad
    Q^{AB/F} = \\frac{\\sum_p Q^{AF} g_A + Q^{BF} g_B}{\\sum_p g_A + g_B}

with :math:`T_g = 0.9994, k_g = -15, D_g = 0.5, T_a = 0.9879, k_a = -22, D_a = 0.8`. The
"g_F where g_S = g_F" rule is the widely used evaluator's (it makes G = 0 where both are 0;
those pixels carry weight 0 anyway). When neither source has any edge (both constant) the
ratio is 0 / 0; Qabf is then defined as 0.
"""
from __future__ import annotations

import math

import torch

from mmdrfuse.fusion.metrics.filters import separable_filter, zero_padded_bands
from mmdrfuse.fusion.metrics.no_reference import check_gray_batch

STRENGTH_T, STRENGTH_K, STRENGTH_D = 0.9994, -15.0, 0.5
ORIENTATION_T, ORIENTATION_K, ORIENTATION_D = 0.9879, -22.0, 0.8


def sobel_strength_orientation(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge strength g and orientation alpha in (-pi/2, pi/2] of every plane of (B, C, H, W) images.

    The responses are exact in float64 (small integers for 8-bit images); strength and
    orientation are returned in float32, whose rounding (1e-7 relative) is far below the
    metric's resolution and which is several times faster for sqrt and atan on the CPU.
    'Valid' windows: the output is (B, C, H - 2, W - 2); :func:`qabf` passes zero-padded bands.
    """
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    # Convolution = correlation with the kernel rotated by 180 degrees: h_x -> [1,2,1]^T [1,0,-1], h_y -> [-1,0,1]^T [1,2,1].
    derivative = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    images = images.to(torch.float64)
    response_x = separable_filter(images, smooth, derivative).to(torch.float32)
    response_y = separable_filter(images, -derivative, smooth).to(torch.float32)
    strength = torch.sqrt(response_x.square().addcmul_(response_y, response_y))
    # atan(y / x) = atan2(y sgn(x), |x|), which torch computes faster; x = 0 gives pi / 2 by convention.
    orientation = torch.atan2(response_y.mul_(response_x.sign()), response_x.abs())
    orientation.masked_fill_(response_x == 0, math.pi / 2)
    return strength, orientation


def edge_preservation(
    source_strength: torch.Tensor, source_orientation: torch.Tensor, fused_strength: torch.Tensor, fused_orientation: torch.Tensor
) -> torch.Tensor:
    """Per-pixel preserved edge information :math:`Q^{SF} \\in [0, 1)` (shapes broadcast)."""
    ratio = torch.minimum(source_strength, fused_strength) / torch.maximum(source_strength, fused_strength)
    relative_strength = torch.where(source_strength == fused_strength, fused_strength, ratio)
    # The sigmoid argument -k_a (A - D_a), with A = 1 - |da| / (pi / 2), as one affine map of |da|.
    orientation_logit = (source_orientation - fused_orientation).abs_().mul_(ORIENTATION_K * 2 / math.pi)
    orientation_logit.add_(-ORIENTATION_K * (1 - ORIENTATION_D))
    strength_term = torch.sigmoid(relative_strength.mul_(-STRENGTH_K).add_(STRENGTH_K * STRENGTH_D))
    return strength_term.mul_(torch.sigmoid(orientation_logit)).mul_(STRENGTH_T * ORIENTATION_T)


def qabf(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """Qabf of (B, 1, H, W) images on the 0..255 scale: (B,)."""
    check_gray_batch(fused, ir, vi)
    numerator = fused.new_zeros(fused.shape[0], dtype=torch.float64)
    denominator = fused.new_zeros(fused.shape[0], dtype=torch.float64)
    bands = zip(*(zero_padded_bands(image, 1) for image in (ir, vi, fused)))
    for band in bands:
        strength, orientation = sobel_strength_orientation(torch.cat(band, 1))
        preserved = edge_preservation(strength[:, :2], orientation[:, :2], strength[:, 2:], orientation[:, 2:])
        weights = strength[:, :2]
        numerator += (preserved * weights).sum((1, 2, 3), dtype=torch.float64)
        denominator += weights.sum((1, 2, 3), dtype=torch.float64)
    return torch.where(denominator > 0, numerator / denominator.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
