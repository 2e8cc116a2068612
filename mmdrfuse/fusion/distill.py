"""Digestible distillation (paper eq. 1): align channel-summed attention maps of student and teacher.

.. math::
    A(X) = \\sum_{c} X_c \\in \\mathbb{R}^{H \\times W}, \\qquad
    L_{distill} = \\frac{1}{P} \\sum_{p=1}^{P}
        \\Big\\| \\frac{A(S_p)}{\\|A(S_p)\\|_2} - \\frac{A(T_p)}{\\|A(T_p)\\|_2} \\Big\\|_2^2

over the pairs ``p``: ``digestible`` uses (4-channel feature, output) of both networks,
``plain`` only the outputs (the "w/o digestible distillation" ablation), ``off`` none.

Norm modes:
* ``sample`` (default, the paper's per-sample ``vec(.)``): each sample's map is normalised by
  its own norm; the squared distance is summed over pixels and averaged over the batch.
* ``batch`` (the released code): one norm over the whole batch's maps and one sum over the
  batch. For B samples of equal norm this equals the ``sample`` value, so the released
  weight (5) keeps its meaning in both modes.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

MODES = ("digestible", "plain", "off")
NORMS = ("sample", "batch")
_EPS = 1e-12  # a dead (all-zero) feature map must not turn the loss into NaN


def attention_map(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H * W): the sum over channels, flattened."""
    if x.ndim != 4:
        raise ValueError(f"attention_map expects (B, C, H, W), got {tuple(x.shape)}")
    return x.sum(1).flatten(1)


def attention_distance(student: torch.Tensor, teacher: torch.Tensor, *, norm: str = "sample") -> torch.Tensor:
    """Scalar squared distance between the L2-normalised attention maps of one pair."""
    if student.shape[0] != teacher.shape[0] or student.shape[-2:] != teacher.shape[-2:]:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} maps do not match")
    s, t = attention_map(student.float()), attention_map(teacher.float())
    if norm == "sample":
        s = s / s.norm(dim=1, keepdim=True).clamp_min(_EPS)
        t = t / t.norm(dim=1, keepdim=True).clamp_min(_EPS)
        return (s - t).pow(2).sum(1).mean()
    if norm == "batch":
        s = s / s.norm().clamp_min(_EPS)
        t = t / t.norm().clamp_min(_EPS)
        return (s - t).pow(2).sum()
    raise ValueError(f"distillation norm must be one of {NORMS}, got {norm!r}")


def distillation_pairs(
    mode: str, student: Tuple[torch.Tensor, torch.Tensor], teacher: Tuple[torch.Tensor, torch.Tensor]
) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """The (student, teacher) pairs that ``mode`` aligns, from both networks' ``(fused, feature)``."""
    (s_fused, s_feature), (t_fused, t_feature) = student, teacher
    if mode == "digestible":
        return [(s_feature, t_feature), (s_fused, t_fused)]
    if mode == "plain":
        return [(s_fused, t_fused)]
    if mode == "off":
        return []
    raise ValueError(f"distillation mode must be one of {MODES}, got {mode!r}")


def distillation_loss(pairs: Sequence[Tuple[torch.Tensor, torch.Tensor]], *, norm: str = "sample") -> torch.Tensor:
    """Mean over ``pairs`` of :func:`attention_distance`; the teacher side should carry no gradient."""
    if not pairs:
        raise ValueError("distillation_loss needs at least one (student, teacher) pair")
    return torch.stack([attention_distance(s, t, norm=norm) for s, t in pairs]).mean()
