"""Content losses and per-sample refresh losses against hand-computed values."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mmdrfuse.fusion.losses import (
    gmsd_refresh_loss,
    gradient_loss,
    intensity_loss,
    laplacian,
    perception_loss,
    ssim_refresh_loss,
)


def test_laplacian_kernel_with_zero_padding():
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 8.0
    out = laplacian(x)[0, 0]
    expected = torch.ones(3, 3)  # every neighbour sees 8 * 1/8
    expected[1, 1] = -8.0
    assert torch.allclose(out, expected)
    # a constant image: interior 0, borders lose the zero-padded neighbours
    ones = laplacian(torch.ones(1, 1, 4, 4))[0, 0]
    assert ones[1, 1] == 0 and torch.isclose(ones[0, 0], torch.tensor(3 / 8 - 1))


def test_intensity_and_gradient_use_the_elementwise_max():
    ir = torch.tensor([[[[0.2, 0.9], [0.5, 0.1]]]])
    vi = torch.tensor([[[[0.6, 0.3], [0.5, 0.4]]]])
    fused = torch.tensor([[[[0.6, 0.8], [0.0, 0.4]]]])
    # max = [[.6, .9], [.5, .4]] -> |diff| = 0, .1, .5, 0
    assert torch.isclose(intensity_loss(fused, ir, vi), torch.tensor(0.15))
    target = torch.max(ir, vi)
    assert torch.isclose(gradient_loss(fused, ir, vi), F.mse_loss(laplacian(fused), laplacian(target)))
    assert gradient_loss(target, ir, vi) == 0


def test_perception_loss_is_mean_over_taps_of_mse_to_max():
    a = [torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 1, 1)]
    ir = [torch.ones(1, 2, 2, 2), torch.full((1, 1, 1, 1), 3.0)]
    vi = [torch.full((1, 2, 2, 2), 2.0), torch.zeros(1, 1, 1, 1)]
    # tap 1: max = 2 -> mse 4; tap 2: max = 3 -> mse 9; mean 6.5
    assert torch.isclose(perception_loss(a, ir, vi), torch.tensor(6.5))


def test_refresh_losses_are_per_sample_and_match_the_batch_formula():
    torch.manual_seed(0)
    fused, best = torch.rand(2, 3, 1, 8, 8).unbind(0)
    taps_f = [torch.rand(3, c, 4, 4) for c in (2, 3, 4, 5, 6)]
    taps_b = [torch.rand(3, c, 4, 4) for c in (2, 3, 4, 5, 6)]
    ls = ssim_refresh_loss(fused, taps_f, best, taps_b)
    lg = gmsd_refresh_loss(fused, taps_f, best, taps_b)
    assert ls.shape == lg.shape == (3,)
    # the released code's batch-mean versions
    released_s = (F.mse_loss(taps_f[3], taps_b[3]) + F.mse_loss(taps_f[4], taps_b[4])) / 2 + F.l1_loss(fused, best)
    released_g = sum(F.mse_loss(taps_f[i], taps_b[i]) for i in range(3)) / 3 + F.mse_loss(laplacian(fused), laplacian(best))
    assert torch.isclose(ls.mean(), released_s) and torch.isclose(lg.mean(), released_g)
    # sample 1 alone gives its own value
    alone = ssim_refresh_loss(fused[1:2], [t[1:2] for t in taps_f], best[1:2], [t[1:2] for t in taps_b])
    assert torch.isclose(alone[0], ls[1])
    assert gmsd_refresh_loss(best, taps_b, best, taps_b).abs().max() == 0
