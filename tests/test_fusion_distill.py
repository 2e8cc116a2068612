"""Digestible distillation against hand-computed toy values, both norm modes."""
from __future__ import annotations

import math

import pytest
import torch

from mmdrfuse.fusion.distill import attention_distance, distillation_loss, distillation_pairs


def test_sample_norm_toy_value():
    # sample 0: student map (3, 4) -> (0.6, 0.8); teacher (1, 0) -> distance (0.4^2 + 0.8^2) = 0.8
    # sample 1: student (channels 1 + 1, 0 + 0) = (2, 0) -> (1, 0); teacher (0, 5) -> (0, 1): distance 2
    student = torch.tensor([[[[3.0, 4.0]]], [[[1.0, 0.0]]]])
    student = torch.cat([student, torch.tensor([[[[0.0, 0.0]]], [[[1.0, 0.0]]]])], dim=1)  # (2, 2, 1, 2)
    teacher = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 5.0]]]])
    assert torch.isclose(attention_distance(student, teacher, norm="sample"), torch.tensor((0.8 + 2.0) / 2))


def test_batch_norm_toy_value():
    # the released code: one norm over the whole batch's maps, one sum
    student = torch.tensor([[[[3.0, 4.0]]], [[[0.0, 0.0]]]])  # maps (3, 4), (0, 0): norm 5
    teacher = torch.tensor([[[[0.0, 0.0]]], [[[0.0, 2.0]]]])  # maps (0, 0), (0, 2): norm 2
    # normalised: s = (.6, .8, 0, 0), t = (0, 0, 0, 1): sum of squares = .36 + .64 + 1 = 2
    assert torch.isclose(attention_distance(student, teacher, norm="batch"), torch.tensor(2.0))
    assert torch.isclose(attention_distance(student, teacher, norm="sample"), torch.tensor((1.0 + 1.0) / 2))


def test_modes_agree_for_equal_norm_samples_and_pairs_are_averaged():
    torch.manual_seed(0)
    s = torch.rand(1, 4, 5, 5).repeat(3, 1, 1, 1)
    t = torch.rand(1, 4, 5, 5).repeat(3, 1, 1, 1)
    assert torch.isclose(attention_distance(s, t, norm="sample"), attention_distance(s, t, norm="batch"))
    so, to = torch.rand(3, 1, 5, 5), torch.rand(3, 1, 5, 5)
    pairs = distillation_pairs("digestible", (so, s), (to, t))
    assert [p[0] is x for p, x in zip(pairs, (s, so))] == [True, True]
    expected = (attention_distance(s, t) + attention_distance(so, to)) / 2
    assert torch.isclose(distillation_loss(pairs), expected)
    assert torch.isclose(distillation_loss(distillation_pairs("plain", (so, s), (to, t))), attention_distance(so, to))
    assert distillation_pairs("off", (so, s), (to, t)) == []


def test_identical_maps_zero_and_dead_features_finite():
    x = torch.rand(2, 4, 3, 3)
    assert attention_distance(x, x * 7.0).abs() < 1e-6  # scale-invariant
    dead = torch.zeros(2, 4, 3, 3)
    value = attention_distance(dead, x)
    assert math.isfinite(value.item()) and torch.isclose(value, torch.tensor(1.0))
    with pytest.raises(ValueError):
        attention_distance(x, torch.rand(2, 4, 4, 4))
