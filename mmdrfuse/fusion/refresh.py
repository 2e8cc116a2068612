"""Dynamic refresh (paper section 3.3): a bank of the best outputs so far and the decisions on it.

For each training patch the bank holds two images: the best output so far by SSIM and the best
by GMSD. Per batch (after epoch 0, which only fills the bank):

.. math::
    S = \\mathrm{SSIM}(O, I_{ir}) + \\mathrm{SSIM}(O, I_{vis}), \\qquad
    G = \\mathrm{GMSD}(O, I_{ir}) + \\mathrm{GMSD}(O, I_{vis})

for the current output (``cur``) and the bank's images (``bs`` for SSIM, ``bg`` for GMSD).
``S_cur > S_bs`` replaces the SSIM image; ``S_cur < S_bs`` adds ``w (S_bs - S_cur) L_s``.
``G_cur < G_bg`` replaces the GMSD image; ``G_cur > G_bg`` adds ``w (G_cur - G_bg) L_g``.
Ties do neither. The gaps are constants (no gradient), ``w = 10`` in the released code.

Rules: ``sample`` decides per patch; ``batch`` compares batch means once per batch, as the
released code does (then every sample of the batch is replaced, or every one gets the
batch-mean gap); ``off`` disables refresh. Per-sample losses are summed and divided by the
whole batch size, so when every sample is worse by the same gap both rules give the same loss.
Under torchrun the ``batch`` rule's means are those of the whole global batch (``batch_means``,
all-reduced by :meth:`mmdrfuse.fusion.distributed.World.batch_means`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union

import torch

from mmdrfuse.fusion.losses import gmsd_refresh_loss, ssim_refresh_loss
from mmdrfuse.metrics.gmsd import gmsd
from mmdrfuse.metrics.ssim import ssim

RULES = ("sample", "batch", "off")
# The four (n,) per-sample sums to their four batch means; None: the means of the given samples.
BatchMeans = Callable[[List[torch.Tensor]], List[torch.Tensor]]


def ssim_score(images: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """(B,) SSIM(images, ir) + SSIM(images, vi), no gradient: 11x11 Gaussian window, sigma 1.5, valid, L = 1."""
    with torch.no_grad():
        images = images.float()
        return ssim(images, ir.float()) + ssim(images, vi.float())


def gmsd_score(images: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """(B,) GMSD(images, ir) + GMSD(images, vi), no gradient: images scaled to 0..255, c = 170, and
    the release's unpadded ('valid') Prewitt filtering."""
    with torch.no_grad():
        images = images.float()
        return gmsd(images, ir.float(), padding="valid") + gmsd(images, vi.float(), padding="valid")


@dataclass
class RefreshDecision:
    """Per-sample outcome of one refresh step, all (B,).

    ``replace_ssim`` / ``replace_gmsd``: write the current output into that bank;
    ``weight_ssim`` / ``weight_gmsd``: the (constant) weight of L_s / L_g, 0 where not added.
    """

    replace_ssim: torch.Tensor
    replace_gmsd: torch.Tensor
    weight_ssim: torch.Tensor
    weight_gmsd: torch.Tensor


def refresh_decision(
    s_cur: torch.Tensor,
    s_best: torch.Tensor,
    g_cur: torch.Tensor,
    g_best: torch.Tensor,
    *,
    rule: str = "sample",
    weight: float = 10.0,
    batch_means: Optional[BatchMeans] = None,
) -> RefreshDecision:
    """Decide replacements and refresh-loss weights from the SSIM and GMSD sums, all (B,).

    ``sample``: per sample, replace where better, weight ``weight * gap`` where worse.
    ``batch``: the same on the batch means, broadcast to every sample; ``batch_means`` computes
    them when the batch is split over several processes.
    """
    if rule not in ("sample", "batch"):
        raise ValueError(f"refresh rule must be 'sample' or 'batch' here, got {rule!r}")
    shapes = {tuple(t.shape) for t in (s_cur, s_best, g_cur, g_best)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"refresh_decision expects four (B,) tensors of one shape, got {sorted(shapes)}")
    s_cur, s_best, g_cur, g_best = (t.detach().double() for t in (s_cur, s_best, g_cur, g_best))
    if rule == "batch":
        size = s_cur.shape
        means = [t.mean() for t in (s_cur, s_best, g_cur, g_best)] if batch_means is None else batch_means([s_cur, s_best, g_cur, g_best])
        s_cur, s_best, g_cur, g_best = (m.expand(size) for m in means)
    ssim_gap = s_best - s_cur  # > 0: the bank is better by SSIM (higher is better)
    gmsd_gap = g_cur - g_best  # > 0: the bank is better by GMSD (lower is better)
    return RefreshDecision(
        replace_ssim=ssim_gap < 0,
        replace_gmsd=gmsd_gap < 0,
        weight_ssim=(weight * ssim_gap.clamp(min=0)).float(),
        weight_gmsd=(weight * gmsd_gap.clamp(min=0)).float(),
    )


class HistoryBank:
    """Best output so far of every training patch, by SSIM and by GMSD.

    Two float16 tensors (N, 1, H, W). float16 rather than uint8: the entries are raw Tanh
    outputs, which can leave [0, 1] (uint8 would clip them), and the refresh losses pull the
    output towards them by L1/MSE amounts that late in training are below uint8's 1/255 step,
    while float16's worst rounding in [0, 1] is 2.4e-4. At the paper's 16,000 patches of
    128x128 this is 1.0 GB in all, against 4.2 GB for the released code's two float64 arrays.
    """

    def __init__(self, count: int, height: int, width: int, *, device: Union[str, torch.device] = "cpu") -> None:
        shape = (count, 1, height, width)
        self.best_ssim = torch.zeros(shape, dtype=torch.float16, device=device)
        self.best_gmsd = torch.zeros(shape, dtype=torch.float16, device=device)
        # Patches not yet seen (epoch 0 drops the last incomplete batch) must be filled on their
        # first visit, not compared with an all-zero image.
        self.filled = torch.zeros(count, dtype=torch.bool, device=device)

    @staticmethod
    def bytes_needed(count: int, height: int, width: int) -> int:
        return 2 * count * height * width * torch.finfo(torch.float16).bits // 8

    @property
    def nbytes(self) -> int:
        return self.best_ssim.nbytes + self.best_gmsd.nbytes

    @property
    def device(self) -> torch.device:
        return self.best_ssim.device

    def fill(self, indices: torch.Tensor, images: torch.Tensor) -> None:
        """Write ``images`` (B, 1, H, W) into both banks at patch ``indices`` (B,) (epoch 0)."""
        self.write("ssim", indices, images)
        self.write("gmsd", indices, images)
        self.filled[indices.to(self.filled.device)] = True

    def write(self, which: str, indices: torch.Tensor, images: torch.Tensor) -> None:
        bank = self._bank(which)
        bank[indices.to(bank.device)] = images.detach().to(device=bank.device, dtype=bank.dtype)

    def read(self, which: str, indices: torch.Tensor, *, device: Union[str, torch.device, None] = None) -> torch.Tensor:
        """float32 (B, 1, H, W) copies of the entries at ``indices``."""
        bank = self._bank(which)
        return bank[indices.to(bank.device)].to(device=device or bank.device, dtype=torch.float32)

    def _bank(self, which: str) -> torch.Tensor:
        if which == "ssim":
            return self.best_ssim
        if which == "gmsd":
            return self.best_gmsd
        raise ValueError(f"bank must be 'ssim' or 'gmsd', got {which!r}")

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {"best_ssim": self.best_ssim.cpu(), "best_gmsd": self.best_gmsd.cpu(), "filled": self.filled.cpu()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        for name in ("best_ssim", "best_gmsd", "filled"):
            current = getattr(self, name)
            if state[name].shape != current.shape:
                raise ValueError(f"history bank {name} has shape {tuple(state[name].shape)}, expected {tuple(current.shape)}")
            current.copy_(state[name])


@dataclass
class RefreshOutcome:
    """The weighted refresh losses of one batch (scalars, already divided by B) and the fractions replaced."""

    loss_ssim: torch.Tensor
    loss_gmsd: torch.Tensor
    replaced_ssim: float
    replaced_gmsd: float


Features = Callable[[torch.Tensor, int], List[torch.Tensor]]


def refresh_step(
    bank: HistoryBank,
    indices: torch.Tensor,
    fused: torch.Tensor,
    fused_taps: Optional[List[torch.Tensor]],
    ir: torch.Tensor,
    vi: torch.Tensor,
    *,
    epoch: int,
    rule: str,
    weight: float,
    features: Features,
    batch_means: Optional[BatchMeans] = None,
) -> RefreshOutcome:
    """Compare ``fused`` (B, 1, H, W) with the bank entries of patches ``indices`` (B,), update the
    bank, and return the refresh losses

    .. math:: L = \\frac{1}{B} \\sum_b (w^s_b L_{s,b} + w^g_b L_{g,b})

    split into its SSIM and GMSD parts. Epoch 0 only fills the bank. ``features(x, taps)``
    gives the first ``taps`` VGG taps of ``x``; it is called without gradient on bank images,
    and only for the samples that get a loss. ``fused_taps``: the five taps of ``fused`` when they
    are as exact as ``features`` would compute them; ``None`` computes them with ``features``
    (with gradient, one pass over the samples that get either loss). ``batch_means``: see
    :func:`refresh_decision`; it is called once per step after epoch 0 with the ``batch`` rule,
    even when none of these samples is in the bank yet (it may be a collective all ranks join).
    """
    zero = fused.new_zeros(())
    unseen = ~bank.filled[indices.to(bank.filled.device)].to(fused.device)
    if epoch == 0 or unseen.all():
        bank.fill(indices, fused)
        if epoch > 0 and rule == "batch" and batch_means is not None:
            batch_means([fused.new_zeros(0, dtype=torch.float64)] * 4)  # this share adds no sample to the means
        return RefreshOutcome(zero, zero, 1.0, 1.0)
    if unseen.any():  # first visit of some patches after epoch 0: fill those, refresh the rest
        bank.fill(indices[unseen.to(indices.device)], fused[unseen])
        seen = ~unseen
        seen_taps = None if fused_taps is None else [t[seen] for t in fused_taps]
        outcome = refresh_step(bank, indices[seen.to(indices.device)], fused[seen], seen_taps,
                               ir[seen], vi[seen], epoch=epoch, rule=rule, weight=weight, features=features,
                               batch_means=batch_means)
        share = seen.float().mean().item()  # losses are per-batch means: rescale to the whole batch
        return RefreshOutcome(outcome.loss_ssim * share, outcome.loss_gmsd * share,
                              outcome.replaced_ssim * share + (1 - share), outcome.replaced_gmsd * share + (1 - share))
    best_ssim = bank.read("ssim", indices, device=fused.device)
    best_gmsd = bank.read("gmsd", indices, device=fused.device)
    decision = refresh_decision(
        ssim_score(fused, ir, vi),
        ssim_score(best_ssim, ir, vi),
        gmsd_score(fused, ir, vi),
        gmsd_score(best_gmsd, ir, vi),
        rule=rule,
        weight=weight,
        batch_means=batch_means,
    )
    bank.write("ssim", indices[decision.replace_ssim.to(indices.device)], fused[decision.replace_ssim])
    bank.write("gmsd", indices[decision.replace_gmsd.to(indices.device)], fused[decision.replace_gmsd])

    batch = fused.shape[0]
    if fused_taps is None:
        fused_taps = _taps_of_refreshed(fused, decision, features)
    losses = []
    for weights, best, taps, loss_fn in (
        (decision.weight_ssim, best_ssim, 5, ssim_refresh_loss),
        (decision.weight_gmsd, best_gmsd, 3, gmsd_refresh_loss),
    ):
        chosen = (weights > 0).nonzero().squeeze(1)
        if chosen.numel() == 0:
            losses.append(zero)
            continue
        with torch.no_grad():
            best_taps = features(best[chosen], taps)
        per_sample = loss_fn(fused[chosen], [t[chosen] for t in fused_taps[:taps]], best[chosen], best_taps)
        losses.append((weights[chosen] * per_sample).sum() / batch)
    return RefreshOutcome(
        losses[0],
        losses[1],
        decision.replace_ssim.float().mean().item(),
        decision.replace_gmsd.float().mean().item(),
    )


def _taps_of_refreshed(fused: torch.Tensor, decision: RefreshDecision, features: Features) -> List[torch.Tensor]:
    """Taps of ``fused`` (with gradient) as full-batch tensors, computed only for the samples that
    get a refresh loss (five taps if any gets L_s, else the three of L_g); zeros elsewhere."""
    wanted = (decision.weight_ssim > 0) | (decision.weight_gmsd > 0)
    chosen = wanted.nonzero().squeeze(1)
    taps = 5 if bool((decision.weight_ssim > 0).any()) else 3
    if chosen.numel() == 0:
        return []
    computed = features(fused[chosen], taps)
    full = []
    for tap in computed:
        # index_put keeps the gradient path to fused[chosen]; rows never chosen are never read.
        holder = tap.new_zeros((fused.shape[0], *tap.shape[1:]))
        full.append(holder.index_put((chosen,), tap))
    return full
