"""Dynamic refresh: decisions and gap weights against hand-computed cases, the bank, refresh_step."""
from __future__ import annotations

import pytest
import torch

from mmdrfuse.fusion.losses import gmsd_refresh_loss, ssim_refresh_loss
from mmdrfuse.fusion.refresh import HistoryBank, gmsd_score, refresh_decision, refresh_step, ssim_score
from mmdrfuse.metrics.gmsd import gmsd


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_per_sample_decisions_and_gap_weights():
    d = refresh_decision(t(0.9, 0.5, 0.7), t(0.8, 0.6, 0.7), t(0.1, 0.3, 0.2), t(0.2, 0.1, 0.2), rule="sample", weight=10)
    # SSIM: higher is better. sample 0 better -> replace; 1 worse by 0.1 -> weight 1.0; 2 tie -> neither
    assert d.replace_ssim.tolist() == [True, False, False]
    assert torch.allclose(d.weight_ssim, torch.tensor([0.0, 1.0, 0.0]))
    # GMSD: lower is better. sample 0 better -> replace; 1 worse by 0.2 -> weight 2.0; 2 tie
    assert d.replace_gmsd.tolist() == [True, False, False]
    assert torch.allclose(d.weight_gmsd, torch.tensor([0.0, 2.0, 0.0]))


def test_batch_rule_compares_means_once():
    # S_cur mean 0.7 < S_bs mean 0.8: every sample gets weight 10 * 0.1, none replaced, although
    # sample 0 alone is better; G_cur mean 0.1 < G_bg mean 0.2: all replaced, no GMSD loss.
    d = refresh_decision(t(0.9, 0.5), t(0.7, 0.9), t(0.15, 0.05), t(0.1, 0.3), rule="batch", weight=10)
    assert d.replace_ssim.tolist() == [False, False]
    assert torch.allclose(d.weight_ssim, torch.tensor([1.0, 1.0]))
    assert d.replace_gmsd.tolist() == [True, True]
    assert torch.equal(d.weight_gmsd, torch.zeros(2))
    per_sample = refresh_decision(t(0.9, 0.5), t(0.7, 0.9), t(0.15, 0.05), t(0.1, 0.3), rule="sample", weight=10)
    assert per_sample.replace_ssim.tolist() == [True, False] and per_sample.replace_gmsd.tolist() == [False, True]


def test_history_bank_is_float16_and_round_trips():
    bank = HistoryBank(5, 16, 16)
    assert bank.best_ssim.dtype == torch.float16 and bank.nbytes == HistoryBank.bytes_needed(5, 16, 16) == 2 * 5 * 256 * 2
    images = torch.rand(2, 1, 16, 16) * 1.2 - 0.1  # Tanh outputs may leave [0, 1]
    bank.fill(torch.tensor([3, 1]), images)
    for which in ("ssim", "gmsd"):
        back = bank.read(which, torch.tensor([3, 1]))
        assert back.dtype == torch.float32 and (back - images).abs().max() <= 2.5e-4 * 2  # float16 rounding near 1.1
    assert bank.best_ssim[0].abs().max() == 0
    other = HistoryBank(5, 16, 16)
    other.load_state_dict(bank.state_dict())
    assert torch.equal(other.best_gmsd, bank.best_gmsd)
    with pytest.raises(ValueError):
        HistoryBank(4, 16, 16).load_state_dict(bank.state_dict())


def fake_features(x, taps=5):
    """A cheap stand-in for the VGG taps with the same calling convention."""
    return [x * (i + 1) for i in range(taps)]


def smooth(generator, size=24):
    coarse = torch.rand(1, 1, 6, 6, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


@pytest.fixture
def scene():
    g = torch.Generator().manual_seed(0)
    ir = torch.cat([smooth(g), smooth(g)])
    vi = torch.cat([smooth(g), smooth(g)])
    good = (ir + vi) / 2
    noise = torch.rand(2, 1, 24, 24, generator=g)
    return ir, vi, good, noise


def test_refresh_step_replaces_better_and_pulls_worse(scene):
    ir, vi, good, noise = scene
    indices = torch.tensor([4, 2])
    bank = HistoryBank(6, 24, 24)
    epoch0 = refresh_step(bank, indices, good, fake_features(good), ir, vi, epoch=0, rule="sample", weight=10, features=fake_features)
    assert epoch0.loss_ssim == 0 and epoch0.loss_gmsd == 0
    assert torch.allclose(bank.read("ssim", indices), good, atol=5e-4)  # epoch 0 fills both banks

    # bank: sample 0 holds noise (current output better), sample 1 holds the good image (current worse)
    bank.fill(indices, torch.cat([noise[:1], good[1:]]))
    fused = torch.cat([good[:1], noise[1:]]).requires_grad_(True)
    bank_before = bank.read("ssim", indices)
    s_cur, s_best = ssim_score(fused, ir, vi), ssim_score(bank_before, ir, vi)
    g_cur, g_best = gmsd_score(fused, ir, vi), gmsd_score(bank_before, ir, vi)
    assert s_cur[0] > s_best[0] and s_cur[1] < s_best[1] and g_cur[0] < g_best[0] and g_cur[1] > g_best[1]

    taps = fake_features(fused)
    out = refresh_step(bank, indices, fused, taps, ir, vi, epoch=1, rule="sample", weight=10, features=fake_features)
    assert out.replaced_ssim == 0.5 and out.replaced_gmsd == 0.5
    after = bank.read("ssim", indices)
    assert torch.allclose(after[0], good[0], atol=5e-4)  # replaced by the better current output
    assert torch.equal(after[1], bank_before[1])  # kept: the bank is better
    w_s = 10 * (s_best[1] - s_cur[1])
    w_g = 10 * (g_cur[1] - g_best[1])
    best = bank_before[1:]
    expected_s = w_s * ssim_refresh_loss(fused[1:], [x[1:] for x in taps], best, fake_features(best)) / 2
    expected_g = w_g * gmsd_refresh_loss(fused[1:], [x[1:] for x in taps], best, fake_features(best, 3)) / 2
    assert torch.allclose(out.loss_ssim, expected_s.float().squeeze(), rtol=1e-5)
    assert torch.allclose(out.loss_gmsd, expected_g.float().squeeze(), rtol=1e-5)
    # the gaps are constants: the gradient is weight * dL/dfused, on the worse sample only
    (grad,) = torch.autograd.grad(out.loss_ssim, fused)
    assert grad[0].abs().max() == 0 and grad[1].abs().max() > 0
    fused2 = fused.detach().clone().requires_grad_(True)
    plain = ssim_refresh_loss(fused2[1:], [x[1:] for x in fake_features(fused2)], best, fake_features(best)).sum()
    (grad_plain,) = torch.autograd.grad(plain * (w_s.float() / 2), fused2)
    assert torch.allclose(grad, grad_plain, rtol=1e-4, atol=1e-9)


def test_refresh_step_batch_rule_treats_the_batch_as_one(scene):
    ir, vi, good, noise = scene
    indices = torch.tensor([0, 1])
    bank = HistoryBank(2, 24, 24)
    bank.fill(indices, torch.cat([noise[:1], good[1:]]))
    fused = torch.cat([good[:1], noise[1:]])
    before = {which: bank.read(which, indices) for which in ("ssim", "gmsd")}
    # The expected branch, from the batch means computed here (one decision for the batch).
    ssim_better = ssim_score(fused, ir, vi).mean() > ssim_score(before["ssim"], ir, vi).mean()
    gmsd_better = gmsd_score(fused, ir, vi).mean() < gmsd_score(before["gmsd"], ir, vi).mean()
    out = refresh_step(bank, indices, fused, fake_features(fused), ir, vi, epoch=3, rule="batch", weight=10, features=fake_features)
    for which, better, replaced, loss in (("ssim", ssim_better, out.replaced_ssim, out.loss_ssim),
                                          ("gmsd", gmsd_better, out.replaced_gmsd, out.loss_gmsd)):
        after = bank.read(which, indices)
        if better:  # every sample replaced, no loss, even the one that is worse on its own
            assert replaced == 1.0 and loss == 0 and torch.allclose(after, fused, atol=5e-4)
        else:  # nothing replaced, every sample pulled towards the bank
            assert replaced == 0.0 and loss > 0 and torch.equal(after, before[which])


def test_unseen_patches_are_filled_not_compared_with_zeros(scene):
    # Epoch 0 drops the last incomplete batch: its patches reach the bank first in epoch 1.
    ir, vi, good, noise = scene
    bank = HistoryBank(3, 24, 24)
    bank.fill(torch.tensor([0]), good[:1])  # patch 0 seen in epoch 0; patch 1 never
    fused = torch.cat([noise[:1], noise[1:]])  # worse than the bank for patch 0
    out = refresh_step(bank, torch.tensor([0, 1]), fused, fake_features(fused), ir, vi,
                       epoch=1, rule="sample", weight=10, features=fake_features)
    assert bank.filled.tolist() == [True, True, False]
    assert torch.allclose(bank.read("ssim", torch.tensor([1])), fused[1:], atol=5e-4)  # filled, not refreshed
    assert torch.allclose(bank.read("ssim", torch.tensor([0])), good[:1], atol=5e-4)  # kept: it was better
    alone = HistoryBank(1, 24, 24)
    alone.fill(torch.tensor([0]), good[:1])
    single = refresh_step(alone, torch.tensor([0]), fused[:1], [t[:1] for t in fake_features(fused)], ir[:1], vi[:1],
                          epoch=1, rule="sample", weight=10, features=fake_features)
    assert out.loss_ssim > 0 and torch.allclose(out.loss_ssim, single.loss_ssim / 2, rtol=1e-5)  # averaged over 2


def test_refresh_gmsd_is_the_releases_unpadded_form():
    # 2x2 blocks (the mean pool leaves them as they are) of x = 20 j and y = 10 j^2 on the 0..255
    # scale, j the pooled column 0..3. Unpadded Prewitt keeps the four pixels with j = 1, 2:
    # m_x = |x(j-1) - x(j+1)| = 40, m_y = 10 |(j-1)^2 - (j+1)^2| = 40 j, so with c = 170
    # GMS(j=1) = (2*40*40 + 170) / (40^2 + 40^2 + 170) = 1 and GMS(j=2) = (2*40*80 + 170) / (40^2 + 80^2 + 170),
    # each twice; the unbiased std of {g1, g1, g2, g2} is |g1 - g2| / sqrt(3).
    j = torch.arange(4, dtype=torch.float64)
    pooled_x, pooled_y = (20 * j).expand(4, 4), (10 * j**2).expand(4, 4)
    up = lambda a: a.repeat_interleave(2, 0).repeat_interleave(2, 1)[None, None] / 255  # noqa: E731
    x, y = up(pooled_x), up(pooled_y)
    g2 = (2 * 40 * 80 + 170) / (40**2 + 80**2 + 170)
    expected = abs(1.0 - g2) / 3**0.5
    assert gmsd(x, y, padding="valid").item() == pytest.approx(expected, rel=1e-7)  # sqrt(. + 1e-12) in the magnitude
    assert gmsd(x, y).item() != pytest.approx(expected, rel=1e-2)  # the zero-padded form sees false border edges
    assert gmsd_score(x, y, y).item() == pytest.approx(2 * expected, rel=1e-6)  # refresh uses the unpadded form
    with pytest.raises(ValueError, match="padding"):
        gmsd(x, y, padding="reflect")
