"""Training of the teacher and the student (paper section 4.1.2, recipe in ``cfg/default.yaml``).

Per step, with O the output and the weights of the ``train_<kind>`` section:

.. math::
    L = w_{int} L_{int} + w_{percep} L_{percep} + w_{grad} L_{grad}
        + L_{refresh} + w_{distill} L_{distill}\\ (\\text{student only})

Teacher: 8 epochs, batch 36, weights 2 / 1 / 0.1. Student: 10 epochs, batch 26, weights
1 / 2 / 0.1, distillation 5, its last conv ``conv2`` initialised from the teacher's ``conv00``.
Adam 1e-4. Each epoch visits the patches in the order of :func:`recipes.epoch_order` and drops
the last incomplete batch, as the released code does. The ``paper`` and ``release`` recipes:
:mod:`mmdrfuse.fusion.recipes`; dynamic refresh and its history bank:
:mod:`mmdrfuse.fusion.refresh`; distillation: :mod:`mmdrfuse.fusion.distill`.

Outputs in ``out_dir``: ``<kind>.pth`` + ``.json`` (final), ``checkpoints/<kind>_epochNN.pth``
(+ ``.json``) after each epoch, ``losses.csv`` and ``losses.png`` (:mod:`.loss_log`), and
``last_state.pt`` for ``resume`` (:mod:`.checkpoints`). An interrupted run (Ctrl-C,
``max_steps``) saves its state, and resuming it ends with the same weights as an uninterrupted run.
Under ``torchrun`` the same loop runs on every rank with DistributedDataParallel, ``batch`` being
the global batch (:mod:`mmdrfuse.fusion.distributed`); only rank 0 writes.
"""
from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from mmdrfuse.device import resolve_device
from mmdrfuse.errors import DataError
from mmdrfuse.fusion.checkpoints import (
    RESUME_FILE,
    Position,
    save_training_state,
    save_weights,
)
from mmdrfuse.fusion.distill import attention_map, distillation_loss, distillation_pairs
from mmdrfuse.fusion.distributed import World, process_group, restore_state, world_from_environ, wrap_model
from mmdrfuse.fusion.loss_log import LOSS_COLUMNS, LossLog
from mmdrfuse.fusion.losses import content_losses
from mmdrfuse.fusion.networks import build_model, load_model
from mmdrfuse.fusion.perceptual import VGG19Taps, build_perceptual, exact_fp32
from mmdrfuse.fusion.recipes import KINDS, epoch_order, training_config
from mmdrfuse.fusion.refresh import BatchMeans, HistoryBank, RefreshOutcome, refresh_step
from mmdrfuse.fusion.train_data import PatchFeeder, open_training_patches, patches_fingerprint

__all__ = ["KINDS", "RESUME_FILE", "Trainer", "build_trainer", "train_model", "training_config"]


@dataclass
class Trainer:
    """Everything one optimisation step touches.

    ``amp``: the VGG-19 passes of the content loss run under bf16 autocast on ``device_type``. The
    refresh losses compare taps of two nearly identical images (the output and its bank entry),
    whose difference bf16 (or TF32) rounding would drown, so their taps and the SSIM/GMSD
    decisions always run in exact fp32 (:func:`mmdrfuse.fusion.perceptual.exact_fp32`).

    Under torchrun: ``network`` is ``model`` in DistributedDataParallel (the forward pass goes
    through it), ``batch_means`` the batch refresh rule's all-reduced means, ``batch_distance``
    the global batch's ``distill_norm="batch"`` distance, and the bank holds this rank's shard
    (``indices`` are its rows).
    """

    config: Dict[str, Any]
    model: nn.Module
    perceptual: VGG19Taps
    optimizer: torch.optim.Optimizer
    bank: Optional[HistoryBank]
    teacher: Optional[nn.Module]
    amp: bool = False
    device_type: str = "cpu"
    network: Optional[nn.Module] = None
    batch_means: Optional[BatchMeans] = None
    batch_distance: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None

    def features(self, images: torch.Tensor, taps: int = 5) -> List[torch.Tensor]:
        """The content loss's taps: bf16 autocast when ``amp``."""
        if not self.amp:
            return self.perceptual(images, taps)
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.perceptual(images, taps)

    @property
    def content_taps_are_exact(self) -> bool:
        # CUDA's default fp32 convolutions use TF32: only the CPU's fp32 taps can be reused by refresh.
        return not self.amp and self.device_type == "cpu"

    def step(self, ir: torch.Tensor, vi: torch.Tensor, indices: torch.Tensor, epoch: int, *,
             weight: float = 1.0) -> Dict[str, float]:  # fmt: skip
        """One Adam step on a batch, its loss scaled by ``weight`` (a rank's share, see
        :meth:`mmdrfuse.fusion.distributed.World.loss_weight`); returns every loss term (floats, unscaled)."""
        total, log = self.loss(ir, vi, indices, epoch)
        self.optimizer.zero_grad(set_to_none=True)
        (total if weight == 1.0 else total * weight).backward()
        self.optimizer.step()
        return log

    def refresh(self, fused, fused_taps, ir, vi, indices, epoch) -> RefreshOutcome:
        """The refresh losses of ``fused`` (B, 1, H, W) and the bank update, in exact fp32."""
        cfg = self.config
        with exact_fp32(self.device_type):
            return refresh_step(
                self.bank, indices, fused, fused_taps if self.content_taps_are_exact else None, ir, vi,
                epoch=epoch, rule=cfg["refresh"], weight=cfg["refresh_weight"], features=self.perceptual,
                batch_means=self.batch_means,
            )  # fmt: skip

    def loss(self, ir: torch.Tensor, vi: torch.Tensor, indices: torch.Tensor, epoch: int):
        """``(total, terms)`` for a batch of (B, 1, H, W) patches with ids ``indices`` (B,); updates the bank."""
        cfg = self.config
        self.model.train()
        pair = torch.cat([ir, vi], 1)
        fused, feature = (self.network or self.model)(pair)
        if pair.shape[0] == 0:
            return self._empty_share(pair, fused, feature, indices, epoch)
        fused_taps = self.features(fused)
        with torch.no_grad():
            ir_taps, vi_taps = self.features(ir), self.features(vi)
        terms = content_losses(fused, ir, vi, fused_taps, ir_taps, vi_taps)
        content = (
            cfg["intensity_weight"] * terms["intensity"]
            + cfg["perception_weight"] * terms["perception"]
            + cfg["gradient_weight"] * terms["gradient"]
        )
        total = content
        log = {name: value.item() for name, value in terms.items()}
        log["distill"] = 0.0
        if self.teacher is not None and cfg["distill"] != "off":
            distill = cfg["distill_weight"] * self.distillation(pair, fused, feature)
            total = total + distill
            log["distill"] = distill.item()
        log.update(refresh_ssim=0.0, refresh_gmsd=0.0, replaced_ssim=0.0, replaced_gmsd=0.0)
        if self.bank is not None:
            outcome = self.refresh(fused, fused_taps, ir, vi, indices, epoch)
            total = total + outcome.loss_ssim + outcome.loss_gmsd
            log.update(
                refresh_ssim=outcome.loss_ssim.item(),
                refresh_gmsd=outcome.loss_gmsd.item(),
                replaced_ssim=outcome.replaced_ssim,
                replaced_gmsd=outcome.replaced_gmsd,
            )
        log.update(total=total.item(), content=content.item())
        return total, log

    def distillation(self, pair: torch.Tensor, fused: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """The unweighted distillation loss of the student's ``(fused, feature)`` on ``pair``."""
        cfg = self.config
        with torch.no_grad():
            teacher_out = self.teacher(pair)
        pairs = distillation_pairs(cfg["distill"], (fused, feature), teacher_out)
        if self.batch_distance is None or cfg["distill_norm"] != "batch":
            return distillation_loss(pairs, norm=cfg["distill_norm"])
        # one norm over the whole global batch, not over this rank's share
        distances = [self.batch_distance(attention_map(s.float()), attention_map(t.float())) for s, t in pairs]
        return torch.stack(distances).mean()

    def _empty_share(self, pair, fused, feature, indices, epoch):
        """A rank that owns none of the batch: a zero loss that still reaches every weight (DDP
        all-reduces gradients on every rank), and its part in the all-reduces of the batch refresh
        rule and of the batch distillation norm."""
        if self.bank is not None:
            self.refresh(fused, None, pair[:, :1], pair[:, 1:], indices, epoch)
        if self.teacher is not None and self.batch_distance is not None and self.config["distill_norm"] == "batch":
            self.distillation(pair, fused, feature)
        return fused.sum() * 0.0, dict.fromkeys(LOSS_COLUMNS[2:], 0.0)


def build_trainer(
    kind: str,
    cfg: Dict[str, Any],
    *,
    count: int,
    height: int,
    width: int,
    device: torch.device,
    teacher_weights=None,
    log: Callable[[str], None] = print,
) -> Trainer:
    """Model (seeded init), frozen teacher and its ``conv00`` copied into the student's ``conv2``,
    perceptual backbone, Adam, and a history bank for ``count`` patches of ``height`` x ``width``."""
    torch.manual_seed(int(cfg["seed"]))
    model = build_model(kind).to(device)
    teacher = None
    if kind == "student":
        if teacher_weights is None and cfg["distill"] != "off":
            raise ValueError("training the student needs the trained teacher: pass --teacher FILE")
        if teacher_weights is None:
            log("no teacher: the student's conv2 keeps its random init (--distill off)")
        else:
            teacher = load_model("teacher", teacher_weights).to(device).eval().requires_grad_(False)
            model.conv2.load_state_dict(teacher.conv00.state_dict())
        if cfg["distill"] == "off":
            teacher = None
    perceptual = build_perceptual(cfg["perceptual"], weights=cfg["vgg_weights"], seed=int(cfg["seed"])).to(device)
    log(f"perceptual backbone: {perceptual.description}")
    bank = None
    if cfg["refresh"] != "off":
        nbytes = HistoryBank.bytes_needed(count, height, width)
        bank = HistoryBank(count, height, width, device=_bank_device(device, nbytes))
        log(f"history bank: 2 x {count} x {height}x{width} float16 = {bank.nbytes / 2**20:.2f} MiB on {bank.device}")
    return Trainer(
        config=cfg,
        model=model,
        perceptual=perceptual,
        optimizer=torch.optim.Adam(model.parameters(), lr=float(cfg["lr"])),
        bank=bank,
        teacher=teacher,
        amp=bool(cfg["amp"]) and device.type == "cuda",
        device_type=device.type,
    )


def _bank_device(device: torch.device, nbytes: int) -> torch.device:
    """The training device when the bank takes under a quarter of its free memory, else the host."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes < free // 4:
            return device
    return torch.device("cpu")


class _DeferredInterrupt:
    """Turn Ctrl-C into a flag checked between steps, so the saved state is never half a step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


@dataclass
class _Run:
    """One training run in ``out_dir``: what it trains, where it stands, and how it saves."""

    kind: str
    trainer: Trainer
    feeder: PatchFeeder
    out_dir: Path
    metadata: Dict[str, Any]
    count: int
    steps_per_epoch: int
    position: Position
    losses: LossLog
    world: World = World()

    @property
    def epochs(self) -> int:
        return int(self.trainer.config["epochs"])

    def save_state(self) -> None:
        """The resume state and the loss log; under torchrun every rank calls it (the bank is gathered) and rank 0 writes."""
        trainer, world = self.trainer, self.world
        bank = None if trainer.bank is None else trainer.bank.state_dict()
        if bank is not None and world.distributed:
            bank = world.gather_bank(bank, self.count)
        if not world.is_main:
            return
        save_training_state(
            self.out_dir, kind=self.kind, recipe=self.metadata["recipe"], data=self.metadata["data"],
            model=trainer.model, optimizer=trainer.optimizer, bank=bank,
            position=self.position, rows=self.losses.rows, world_size=world.size,
        )  # fmt: skip
        self.losses.write(self.out_dir)

    def save_weights(self, path: Path, **extra) -> Path:
        if not self.world.is_main:
            return path
        progress = {"epoch": self.position.epoch, "global_step": self.position.global_step,
                    "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch}  # fmt: skip
        return save_weights(path, self.trainer.model, {**self.metadata, **progress, **extra})


def _train_epochs(run: _Run, *, max_steps: Optional[int], checkpoint_every: int, interrupt, on_step) -> bool:
    """Train from ``run.position`` to the last epoch; False when stopped by ``max_steps`` first."""
    cfg, position, world = run.trainer.config, run.position, run.world
    batch = int(cfg["batch"])
    while position.epoch < run.epochs:
        order = epoch_order(int(cfg["seed"]), position.epoch, run.count, shuffle=cfg["shuffle"])
        while position.step_in_epoch < run.steps_per_epoch:
            if max_steps is not None and position.global_step >= max_steps:
                return False
            chosen = order[position.step_in_epoch * batch : (position.step_in_epoch + 1) * batch]
            rows = world.owned_rows(chosen)  # the whole batch on one process
            ir, vi = run.feeder(rows)
            terms = run.trainer.step(ir, vi, torch.from_numpy(rows), position.epoch,
                                     weight=world.loss_weight(len(rows), batch))  # fmt: skip
            stop = interrupt.requested
            if world.distributed:
                terms, stop = world.step_terms(terms, len(rows), batch, stop)
            position.advance()
            run.losses.append(position.global_step, position.epoch + 1, terms)
            on_step(terms)
            if checkpoint_every and position.global_step % checkpoint_every == 0:
                run.save_state()
            if stop:
                run.save_state()
                raise KeyboardInterrupt
        position.next_epoch()
        epoch_file = run.out_dir / "checkpoints" / f"{run.kind}_epoch{position.epoch:02d}.pth"
        run.save_weights(epoch_file, completed=position.epoch == run.epochs)
        run.save_state()
    return True


def train_model(
    kind: str,
    *,
    patches,
    out_dir,
    teacher_weights=None,
    vi_dir=None,
    progress: bool = True,
    log: Callable[[str], None] = None,
    log_every: int = 0,
    **overrides,
) -> Path:
    """Train ``kind`` (``teacher`` | ``student``) on ``patches``; returns the final weights path.

    Args:
        patches: a patch store folder, an IR patch folder (with ``vi_dir``), or an object with
            uint8 (N, H, W) ``ir`` / ``vi`` arrays (and optionally ``names``).
        out_dir: folder for weights, checkpoints, loss curves and the resume state.
        teacher_weights: the trained teacher (released ``teacher.model`` or a ``teacher.pth``),
            required for the student.
        progress: a tqdm bar; ``log_every``: also a ``log`` line every N steps (for logs of
            a time-limited run).
        overrides: keys of the ``train_<kind>`` section of default.yaml, and ``limit`` (first N
            patches), ``max_steps`` (stop after this many steps in all, saving the resume
            state), ``resume`` (continue from ``out_dir/last_state.pt``).

    Started by torchrun (``WORLD_SIZE`` set), every rank trains its share of each global batch with
    DistributedDataParallel on ``LOCAL_RANK``'s GPU (or the CPU), and only rank 0 logs and writes.
    """
    from tqdm import tqdm

    cfg = training_config(kind, overrides)
    world = world_from_environ()
    write = (log or tqdm.write) if world.is_main else (lambda _: None)
    progress = progress and world.is_main
    out_dir = Path(out_dir)
    if (out_dir / RESUME_FILE).exists() and not cfg["resume"]:
        raise ValueError(f"{out_dir} already holds a training run; pass --resume to continue it or choose another --out")
    if kind == "student" and teacher_weights is None and cfg["distill"] != "off":
        raise ValueError("training the student needs the trained teacher: pass --teacher FILE")
    ir, vi, names = open_training_patches(patches, vi_dir, cfg["limit"])
    count, height, width = ir.shape
    batch = int(cfg["batch"])
    steps_per_epoch = count // batch
    if steps_per_epoch == 0:
        raise DataError(f"only {count} patches for a batch of {batch}: lower --batch or add patches")
    device = world.device(resolve_device(str(cfg["device"])))
    with process_group(world, device):
        return _train(kind, cfg, world, patches=patches, vi_dir=vi_dir, ir=ir, vi=vi, names=names, device=device,
                      out_dir=out_dir, teacher_weights=teacher_weights, progress=progress, write=write,
                      log_every=log_every)  # fmt: skip


def _train(kind, cfg, world: World, *, patches, vi_dir, ir, vi, names, device, out_dir, teacher_weights, progress,
           write, log_every) -> Path:  # fmt: skip
    """:func:`train_model` once the patches, the device and the process group are ready."""
    from tqdm import tqdm

    count, height, width = ir.shape
    batch = int(cfg["batch"])
    steps_per_epoch = count // batch
    trainer = build_trainer(kind, cfg, count=world.shard_size(count), height=height, width=width, device=device,
                            teacher_weights=teacher_weights, log=write)  # fmt: skip
    amp_note = ", VGG-19 in bf16 autocast (refresh in fp32)" if trainer.amp else ""
    ranks = f" x {world.size} ranks (DDP, global batch)" if world.distributed else ""
    write(f"{kind}: {count} patches of {height}x{width}, {cfg['epochs']} epochs x {steps_per_epoch} steps of {batch} "
          f"on {device}{ranks}, recipe {cfg['recipe']}{amp_note}")  # fmt: skip
    data_info = {
        "patches": str(patches) if not hasattr(patches, "ir") else "in-memory arrays",
        "vi_dir": str(vi_dir) if vi_dir else None,
        "count": count,
        "size": [height, width],
        "fingerprint": patches_fingerprint(ir, names),
    }
    metadata = {
        "kind": kind,
        "recipe": {k: v for k, v in cfg.items() if k not in ("resume", "max_steps")},
        "perceptual": trainer.perceptual.description,
        "data": data_info,
        "seed": int(cfg["seed"]),
        "teacher_weights": str(teacher_weights) if teacher_weights else None,
        "world_size": world.size,
    }
    position, rows = Position(), []
    if cfg["resume"]:
        position, rows = restore_state(world, out_dir, recipe=metadata["recipe"], data=data_info, model=trainer.model,
                                       optimizer=trainer.optimizer, bank=trainer.bank, count=count)  # fmt: skip
        write(f"resuming {kind} at epoch {position.epoch + 1}, step {position.global_step}")
    if world.distributed:
        trainer.network = wrap_model(trainer.model, world, device)
        trainer.batch_means = world.batch_means
        trainer.batch_distance = world.batch_norm_distance
        ir, vi = ir[world.rank :: world.size], vi[world.rank :: world.size]  # this rank's patches, by shard row
    run = _Run(kind, trainer, PatchFeeder(ir, vi, device), out_dir, metadata, count, steps_per_epoch, position,
               LossLog(rows), world)  # fmt: skip
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)

    bar = tqdm(total=run.epochs * steps_per_epoch, initial=position.global_step, disable=not progress,
               desc=f"train {kind}", unit="step")  # fmt: skip
    shown = ("total", "content", "refresh_ssim", "refresh_gmsd", "distill")

    def on_step(terms: Dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix(epoch=position.epoch + 1, **{k: f"{terms[k]:.4g}" for k in shown})
        if log_every and position.global_step % log_every == 0:
            values = " ".join(f"{k} {terms[k]:.4g}" for k in shown)
            write(f"{kind} step {position.global_step}/{bar.total} (epoch {position.epoch + 1}): {values}")

    started = time.perf_counter()
    interrupt = _DeferredInterrupt()
    max_steps = None if cfg["max_steps"] is None else int(cfg["max_steps"])
    try:
        completed = _train_epochs(run, max_steps=max_steps, checkpoint_every=int(cfg.get("checkpoint_every") or 0),
                                  interrupt=interrupt, on_step=on_step)  # fmt: skip
    except KeyboardInterrupt:
        if (out_dir / RESUME_FILE).exists():
            write(f"interrupted at step {position.global_step}; continue with --resume (state in {out_dir / RESUME_FILE})")
        raise
    finally:
        interrupt.restore()
        bar.close()
    if not completed:
        run.save_state()
    # A run stopped early (max_steps) must not leave a file that looks like finished weights.
    name = kind if completed else f"{kind}_partial"
    final = run.save_weights(out_dir / f"{name}.pth", completed=completed, seconds=time.perf_counter() - started)
    if completed and world.is_main:
        for leftover in (out_dir / f"{kind}_partial.pth", out_dir / f"{kind}_partial.json"):
            leftover.unlink(missing_ok=True)
    write(f"{'finished' if completed else f'stopped after step {position.global_step} (max_steps)'}: weights in {final}")
    return final

