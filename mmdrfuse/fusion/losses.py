"""MMDRFuse content losses (paper eqs. 2-5) and the per-sample refresh losses (eqs. 9-10).

All images are (B, 1, H, W) in [0, 1]; ``taps`` are lists of VGG-19 activations from
:class:`mmdrfuse.fusion.perceptual.VGG19Taps`. ``max`` is element-wise:

.. math::
    L_{int} = \\operatorname{mean} |O - \\max(I_{ir}, I_{vis})|, \\qquad
    L_{grad} = \\operatorname{mean} (\\nabla O - \\nabla \\max(I_{ir}, I_{vis}))^2,

    L_{percep} = \\frac{1}{5} \\sum_{i=1}^{5} \\operatorname{mean} (\\phi_i(O) - \\max(\\phi_i(I_{ir}), \\phi_i(I_{vis})))^2,

with :math:`\\nabla` the 3x3 Laplacian-like kernel of the released code (-1 in the centre, 1/8
elsewhere, zero padding 1).
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F

_LAPLACIAN = torch.full((3, 3), 1.0 / 8.0)
_LAPLACIAN[1, 1] = -1.0


def _check_gray(name: str, x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must be (B, 1, H, W), got {tuple(x.shape)}")


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 1, H, W): 3x3 kernel, centre -1, the 8 neighbours 1/8, zero padding."""
    _check_gray("laplacian input", x)
    return F.conv2d(x, _LAPLACIAN.to(dtype=x.dtype, device=x.device)[None, None], padding=1)


def intensity_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """Scalar L1(fused, max(ir, vi))."""
    return F.l1_loss(fused, torch.max(ir, vi))


def gradient_loss(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """Scalar MSE(lap(fused), lap(max(ir, vi)))."""
    return F.mse_loss(laplacian(fused), laplacian(torch.max(ir, vi)))


def perception_loss(
    fused_taps: Sequence[torch.Tensor], ir_taps: Sequence[torch.Tensor], vi_taps: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Scalar mean over the taps of MSE(phi(fused), max(phi(ir), phi(vi)))."""
    if not len(fused_taps) == len(ir_taps) == len(vi_taps):
        raise ValueError("perception_loss needs the same number of taps for fused, ir and vi")
    terms = [F.mse_loss(f.float(), torch.max(a, b).float()) for f, a, b in zip(fused_taps, ir_taps, vi_taps)]
    return torch.stack(terms).mean()


def content_losses(
    fused: torch.Tensor,
    ir: torch.Tensor,
    vi: torch.Tensor,
    fused_taps: Sequence[torch.Tensor],
    ir_taps: Sequence[torch.Tensor],
    vi_taps: Sequence[torch.Tensor],
) -> Dict[str, torch.Tensor]:
    """The three unweighted content terms: ``{"intensity", "gradient", "perception"}``."""
    for name, x in (("fused", fused), ("ir", ir), ("vi", vi)):
        _check_gray(name, x)
    return {
        "intensity": intensity_loss(fused, ir, vi),
        "gradient": gradient_loss(fused, ir, vi),
        "perception": perception_loss(fused_taps, ir_taps, vi_taps),
    }


def _per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).pow(2).flatten(1).mean(1)


def ssim_refresh_loss(
    fused: torch.Tensor, fused_taps: Sequence[torch.Tensor], best: torch.Tensor, best_taps: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Per-sample L_s (B,): mean over VGG taps 4, 5 of MSE(phi(fused), phi(best)) + L1(fused, best).

    ``fused_taps`` and ``best_taps`` hold the five taps of ``fused`` and of ``best`` (the bank's
    best-by-SSIM images).
    """
    deep = [_per_sample_mse(f, b) for f, b in zip(fused_taps[3:5], best_taps[3:5])]
    return torch.stack(deep).mean(0) + (fused - best).abs().flatten(1).mean(1)


def gmsd_refresh_loss(
    fused: torch.Tensor, fused_taps: Sequence[torch.Tensor], best: torch.Tensor, best_taps: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Per-sample L_g (B,): mean over VGG taps 1..3 of MSE(phi(fused), phi(best)) + MSE(lap(fused), lap(best)).

    ``best_taps`` needs only the first three taps of ``best`` (the bank's best-by-GMSD images).
    """
    shallow = [_per_sample_mse(f, b) for f, b in zip(fused_taps[:3], best_taps[:3])]
    return torch.stack(shallow).mean(0) + _per_sample_mse(laplacian(fused), laplacian(best))
