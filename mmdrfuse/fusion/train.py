"""Training of the teacher and the student (paper section 4.1.2, recipe in ``cfg/default.yaml``).

Per step, with O the output and the weights of the ``train_<kind>`` section:

.. math::
    L = w_{int} L_{int} + w_{percep} L_{percep} + w_{grad} L_{grad}
        + L_{refresh} + w_{distill} L_{distill}\\ (\\text{student only})

Teacher: 8 epochs, batch 36, weights 2 / 1 / 0.1. Student: 10 epochs, batch 26, weights
1 / 2 / 0.1, distillation 5, its last conv ``conv2`` initialised from the teacher's ``conv00``.
Adam 1e-4. Each epoch visits the patches in the order ``default_rng([seed, epoch]).permutation``
and drops the last incomplete batch, as the released code does. Dynamic refresh and its history
bank: :mod:`mmdrfuse.fusion.refresh`; distillation: :mod:`mmdrfuse.fusion.distill`.

Outputs in ``out_dir``: ``<kind>.pth`` + ``.json`` (final), ``checkpoints/<kind>_epochNN.pth``
(+ ``.json``) after each epoch, ``losses.csv`` (one row per step, every loss term) and
``losses.png``, and ``last_state.pt`` for ``resume``. An interrupted run (Ctrl-C, ``max_steps``)
saves its state, and resuming it ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from mmdrfuse.config import defaults
from mmdrfuse.device import resolve_device
from mmdrfuse.errors import DataError
from mmdrfuse.files import write_bytes_atomic, write_text_atomic
from mmdrfuse.fusion.checkpoints import RESUME_FILE, load_resume_state, save_resume_state, save_weights
from mmdrfuse.fusion.distill import MODES as DISTILL_MODES
from mmdrfuse.fusion.distill import NORMS as DISTILL_NORMS
from mmdrfuse.fusion.distill import distillation_loss, distillation_pairs
from mmdrfuse.fusion.losses import content_losses
from mmdrfuse.fusion.networks import build_model, load_model
from mmdrfuse.fusion.perceptual import BACKBONES, VGG19Taps, build_perceptual
from mmdrfuse.fusion.refresh import RULES, HistoryBank, refresh_step

KINDS = ("teacher", "student")
RUN_KEYS = {"limit": None, "max_steps": None, "resume": False}
# Keys that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = ("epochs", "max_steps", "resume", "device", "checkpoint_every")
LOSS_COLUMNS = (
    "step", "epoch", "total", "content", "intensity", "gradient", "perception",
    "refresh_ssim", "refresh_gmsd", "distill", "replaced_ssim", "replaced_gmsd",
)  # fmt: skip
MIN_PATCH = 16  # relu5_4 sits after four 2x poolings


def training_config(kind: str, overrides: Dict[str, Any]) -> Dict[str, Any]:
    """The ``train_<kind>`` defaults with ``overrides`` applied and checked."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    config = {**defaults(f"train_{kind}"), **RUN_KEYS}
    config.pop("out", None)  # the command line's default folder; train_model takes out_dir
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ValueError(f"unknown training option(s) for {kind}: {', '.join(unknown)}")
    config.update(overrides)
    choices = {"refresh": RULES, "perceptual": BACKBONES}
    if kind == "student":
        choices.update(distill=DISTILL_MODES, distill_norm=DISTILL_NORMS)
    for key, allowed in choices.items():
        if config[key] not in allowed:
            raise ValueError(f"{key} must be one of {allowed}, got {config[key]!r}")
    for key in ("epochs", "batch"):
        if int(config[key]) < 1:
            raise ValueError(f"{key} must be at least 1, got {config[key]}")
    return config


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The patch order of one epoch: a permutation that depends only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(count)


class PatchFeeder:
    """Batches of (ir, vi) float32 (B, 1, H, W) in [0, 1] on ``device`` from uint8 (N, H, W) arrays.

    On CUDA the uint8 arrays are copied to the GPU once (0.5 GB at paper scale); on the CPU
    they stay as given (possibly memory-mapped) and only each batch is read.
    """

    def __init__(self, ir: np.ndarray, vi: np.ndarray, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.ir = torch.from_numpy(np.ascontiguousarray(ir)).to(device)
            self.vi = torch.from_numpy(np.ascontiguousarray(vi)).to(device)
        else:
            self.ir, self.vi = ir, vi

    def __call__(self, indices: np.ndarray):
        if isinstance(self.ir, torch.Tensor):
            index = torch.from_numpy(indices).to(self.device)
            ir, vi = self.ir[index], self.vi[index]
        else:
            ir, vi = torch.from_numpy(np.asarray(self.ir[indices])), torch.from_numpy(np.asarray(self.vi[indices]))
        return ir[:, None].float().div_(255.0), vi[:, None].float().div_(255.0)


@dataclass
class Trainer:
    """Everything one optimisation step touches."""

    config: Dict[str, Any]
    model: nn.Module
    perceptual: VGG19Taps
    optimizer: torch.optim.Optimizer
    bank: Optional[HistoryBank]
    teacher: Optional[nn.Module]
    autocast: Callable[[], contextlib.AbstractContextManager]

    def features(self, images: torch.Tensor, taps: int = 5) -> List[torch.Tensor]:
        with self.autocast():
            return self.perceptual(images, taps)

    def step(self, ir: torch.Tensor, vi: torch.Tensor, indices: torch.Tensor, epoch: int) -> Dict[str, float]:
        """One Adam step on a batch; returns every loss term (floats)."""
        total, log = self.loss(ir, vi, indices, epoch)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return log

    def loss(self, ir: torch.Tensor, vi: torch.Tensor, indices: torch.Tensor, epoch: int):
        """``(total, terms)`` for a batch of (B, 1, H, W) patches with ids ``indices`` (B,); updates the bank."""
        cfg = self.config
        self.model.train()
        pair = torch.cat([ir, vi], 1)
        fused, feature = self.model(pair)
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
            with torch.no_grad():
                teacher_out = self.teacher(pair)
            pairs = distillation_pairs(cfg["distill"], (fused, feature), teacher_out)
            distill = cfg["distill_weight"] * distillation_loss(pairs, norm=cfg["distill_norm"])
            total = total + distill
            log["distill"] = distill.item()
        log.update(refresh_ssim=0.0, refresh_gmsd=0.0, replaced_ssim=0.0, replaced_gmsd=0.0)
        if self.bank is not None:
            outcome = refresh_step(
                self.bank, indices, fused, fused_taps, ir, vi,
                epoch=epoch, rule=cfg["refresh"], weight=cfg["refresh_weight"], features=self.features,
            )  # fmt: skip
            total = total + outcome.loss_ssim + outcome.loss_gmsd
            log.update(
                refresh_ssim=outcome.loss_ssim.item(),
                refresh_gmsd=outcome.loss_gmsd.item(),
                replaced_ssim=outcome.replaced_ssim,
                replaced_gmsd=outcome.replaced_gmsd,
            )
        log.update(total=total.item(), content=content.item())
        return total, log


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
    use_amp = bool(cfg["amp"]) and device.type == "cuda"
    return Trainer(
        config=cfg,
        model=model,
        perceptual=perceptual,
        optimizer=torch.optim.Adam(model.parameters(), lr=float(cfg["lr"])),
        bank=bank,
        teacher=teacher,
        autocast=(lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext,
    )


def _open_patches(patches, vi_dir, limit):
    if hasattr(patches, "ir") and hasattr(patches, "vi"):
        data = patches
    else:
        from mmdrfuse.data.patches import open_patches

        data = open_patches(patches, vi_dir=vi_dir)
    ir, vi = data.ir, data.vi
    if limit is not None:
        if isinstance(limit, bool) or int(limit) != limit or limit < 1:
            raise DataError(f"--limit must be a positive number of patches, got {limit!r}")
        ir, vi = ir[: int(limit)], vi[: int(limit)]
    if ir.ndim != 3 or ir.shape != vi.shape or ir.dtype != np.uint8 or vi.dtype != np.uint8:
        raise DataError(f"patches must be two uint8 (N, H, W) arrays of one shape, got {ir.shape} {ir.dtype} and {vi.shape} {vi.dtype}")
    if min(ir.shape[1:]) < MIN_PATCH:
        raise DataError(f"patches of {ir.shape[2]}x{ir.shape[1]} are too small: VGG-19 relu5_4 needs at least {MIN_PATCH}x{MIN_PATCH}")
    names = list(getattr(data, "names", []))[: len(ir)]
    return ir, vi, names


def _data_fingerprint(ir: np.ndarray, names: List[str]) -> str:
    digest = hashlib.sha1(repr((ir.shape, names[:1000])).encode())
    digest.update(np.ascontiguousarray(ir[: min(len(ir), 64)]).tobytes())
    return digest.hexdigest()[:16]


def _bank_device(device: torch.device, nbytes: int) -> torch.device:
    """The training device when the bank takes under a quarter of its free memory, else the host."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes < free // 4:
            return device
    return torch.device("cpu")


def _write_losses(out_dir: Path, rows: List[List[float]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(LOSS_COLUMNS)
    for row in rows:
        writer.writerow([int(row[0]), int(row[1])] + [f"{v:.8g}" for v in row[2:]])
    write_text_atomic(out_dir / "losses.csv", text.getvalue())
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    data = np.asarray(rows, dtype=np.float64)
    figure = Figure(figsize=(9, 5), tight_layout=True)
    axes = figure.add_subplot()
    for column, name in enumerate(LOSS_COLUMNS[2:10], start=2):
        if np.any(data[:, column] > 0):
            axes.plot(data[:, 0], data[:, column], label=name, linewidth=1)
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(out_dir / "losses.png", buffer.getvalue())


def _rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def train_model(
    kind: str,
    *,
    patches,
    out_dir,
    teacher_weights=None,
    vi_dir=None,
    progress: bool = True,
    log: Callable[[str], None] = None,
    **overrides,
) -> Path:
    """Train ``kind`` (``teacher`` | ``student``) on ``patches``; returns the final weights path.

    Args:
        patches: a patch store folder, an IR patch folder (with ``vi_dir``), or an object with
            uint8 (N, H, W) ``ir`` / ``vi`` arrays (and optionally ``names``).
        out_dir: folder for weights, checkpoints, loss curves and the resume state.
        teacher_weights: the trained teacher (released ``teacher.model`` or a ``teacher.pth``),
            required for the student.
        overrides: keys of the ``train_<kind>`` section of default.yaml, and ``limit`` (first N
            patches), ``max_steps`` (stop after this many steps in all, saving the resume
            state), ``resume`` (continue from ``out_dir/last_state.pt``).
    """
    from tqdm import tqdm

    cfg = training_config(kind, overrides)
    write = log or tqdm.write
    out_dir = Path(out_dir)
    if (out_dir / RESUME_FILE).exists() and not cfg["resume"]:
        raise ValueError(f"{out_dir} already holds a training run; pass --resume to continue it or choose another --out")
    if kind == "student" and teacher_weights is None and cfg["distill"] != "off":
        raise ValueError("training the student needs the trained teacher: pass --teacher FILE")
    ir, vi, names = _open_patches(patches, vi_dir, cfg["limit"])
    count, height, width = ir.shape
    batch = int(cfg["batch"])
    steps_per_epoch = count // batch
    if steps_per_epoch == 0:
        raise DataError(f"only {count} patches for a batch of {batch}: lower --batch or add patches")
    device = resolve_device(str(cfg["device"]))
    seed = int(cfg["seed"])

    trainer = build_trainer(kind, cfg, count=count, height=height, width=width, device=device,
                            teacher_weights=teacher_weights, log=write)  # fmt: skip
    model, bank = trainer.model, trainer.bank
    amp_note = ", VGG-19 in bf16 autocast" if cfg["amp"] and device.type == "cuda" else ""
    write(f"{kind}: {count} patches of {height}x{width}, {cfg['epochs']} epochs x {steps_per_epoch} steps of {batch} on {device}{amp_note}")
    recipe = {k: v for k, v in cfg.items() if k not in ("resume", "max_steps")}
    data_info = {
        "patches": str(patches) if not hasattr(patches, "ir") else "in-memory arrays",
        "vi_dir": str(vi_dir) if vi_dir else None,
        "count": count,
        "size": [height, width],
        "fingerprint": _data_fingerprint(ir, names),
    }
    metadata = {
        "kind": kind,
        "recipe": recipe,
        "perceptual": trainer.perceptual.description,
        "data": data_info,
        "seed": seed,
        "teacher_weights": str(teacher_weights) if teacher_weights else None,
    }

    epoch, step_in_epoch, global_step, rows = 0, 0, 0, []
    if cfg["resume"]:
        state = load_resume_state(out_dir)
        changed = sorted(
            k for k in set(recipe) | set(state["recipe"])
            if k not in RESUMABLE_CHANGES and recipe.get(k) != state["recipe"].get(k)
        )  # fmt: skip
        if changed or state["data"]["fingerprint"] != data_info["fingerprint"]:
            what = ", ".join(changed) if changed else "the training patches"
            raise ValueError(f"cannot resume {out_dir / RESUME_FILE}: {what} differ(s) from the interrupted run")
        model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        if bank is not None:
            bank.load_state_dict(state["bank"])
        _set_rng_state(state["rng"])
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        rows = [list(r) for r in state["rows"]]
        write(f"resuming {kind} at epoch {epoch + 1}, step {global_step}")

    def checkpoint_state() -> None:
        save_resume_state(out_dir, {
            "kind": kind, "recipe": recipe, "data": data_info,
            "model": model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
            "bank": bank.state_dict() if bank is not None else {},
            "rng": _rng_state(), "epoch": epoch, "step_in_epoch": step_in_epoch,
            "global_step": global_step, "rows": rows,
        })  # fmt: skip
        _write_losses(out_dir, rows)

    def progress_info() -> Dict[str, Any]:
        return {"epoch": epoch, "global_step": global_step, "epochs": int(cfg["epochs"]), "steps_per_epoch": steps_per_epoch}

    epochs, max_steps = int(cfg["epochs"]), cfg["max_steps"]
    checkpoint_every = int(cfg.get("checkpoint_every") or 0)
    out_dir.mkdir(parents=True, exist_ok=True)
    total_steps = epochs * steps_per_epoch
    feeder = PatchFeeder(ir, vi, device)
    stopped = False
    bar = tqdm(total=total_steps, initial=global_step, disable=not progress, desc=f"train {kind}", unit="step")
    started = time.perf_counter()
    interrupt = _DeferredInterrupt()
    try:
        while epoch < epochs and not stopped:
            order = epoch_order(seed, epoch, count)
            while step_in_epoch < steps_per_epoch:
                if max_steps is not None and global_step >= int(max_steps):
                    stopped = True
                    break
                chosen = order[step_in_epoch * batch : (step_in_epoch + 1) * batch]
                ir_batch, vi_batch = feeder(chosen)
                terms = trainer.step(ir_batch, vi_batch, torch.from_numpy(chosen), epoch)
                step_in_epoch += 1
                global_step += 1
                rows.append([global_step, epoch + 1] + [terms[c] for c in LOSS_COLUMNS[2:]])
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, **{k: f"{terms[k]:.4g}" for k in ("total", "content", "refresh_ssim", "refresh_gmsd", "distill")})
                if checkpoint_every and global_step % checkpoint_every == 0:
                    checkpoint_state()
                if interrupt.requested:
                    checkpoint_state()
                    write(f"interrupted after step {global_step}; continue with --resume (state in {out_dir / RESUME_FILE})")
                    raise KeyboardInterrupt
            if stopped:
                break
            epoch, step_in_epoch = epoch + 1, 0
            save_weights(out_dir / "checkpoints" / f"{kind}_epoch{epoch:02d}.pth", model, {**metadata, **progress_info(), "completed": epoch == epochs})
            checkpoint_state()
    finally:
        interrupt.restore()
        bar.close()
    if stopped:
        checkpoint_state()
    completed = epoch >= epochs
    # A run stopped early (max_steps) must not leave a file that looks like finished weights.
    name = kind if completed else f"{kind}_partial"
    final = save_weights(out_dir / f"{name}.pth", model, {**metadata, **progress_info(), "completed": completed, "seconds": time.perf_counter() - started})
    if completed:
        for leftover in (out_dir / f"{kind}_partial.pth", out_dir / f"{kind}_partial.json"):
            leftover.unlink(missing_ok=True)
    write(f"{'finished' if completed else f'stopped after step {global_step} (max_steps)'}: weights in {final}")
    return final
