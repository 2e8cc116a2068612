"""Training outputs: plain weights, their metadata, and the resume state.

* ``<name>.pth``: a plain state dict with the released key names (``conv1.1.weight`` ...), so
  ``networks.load_model`` and ``mmdrfuse fuse --weights`` read it like the released ``*.model``.
* ``<name>.json``: what produced it (recipe, perceptual backbone, data, seed, code version,
  parameter count, progress).
* ``last_state.pt``: everything ``--resume`` needs (model, optimizer, history bank, RNG states,
  epoch/step, loss history), kept apart so the weights file stays a plain state dict. A run
  resumes only with the recipe and patches it was interrupted with (keys of
  :data:`RESUMABLE_CHANGES` excepted). The bank is whole, in patch-id order, whatever the number
  of processes that trained (``world_size``), so a run may resume on another number of them.

Every file is written under a temporary name and renamed into place.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

import mmdrfuse
from mmdrfuse.files import write_text_atomic
from mmdrfuse.fusion.networks import count_parameters

PathLike = Union[str, os.PathLike]
RESUME_FILE = "last_state.pt"
# Keys that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = ("epochs", "max_steps", "resume", "device", "checkpoint_every")


def _torch_save_atomic(obj: Any, path: Path) -> None:
    # torch.save streams to the file: no second in-memory copy of a 1 GB history bank.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_weights(path: PathLike, model: nn.Module, metadata: Dict[str, Any]) -> Path:
    """Write ``path`` (``.pth``, plain CPU state dict) and ``path`` with ``.json`` (metadata); returns ``path``."""
    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    _torch_save_atomic(state, path)
    info = {
        "mmdrfuse_version": mmdrfuse.__version__,
        "torch_version": torch.__version__,
        "model": type(model).__name__.lower(),
        "parameters": count_parameters(model),
        **metadata,
    }
    write_text_atomic(path.with_suffix(".json"), json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    return path


@dataclass
class Position:
    """Where a run stands: ``epoch`` (0-based) and ``step_in_epoch`` of the next step, steps done in all."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0

    def advance(self) -> None:
        self.step_in_epoch += 1
        self.global_step += 1

    def next_epoch(self) -> None:
        self.epoch, self.step_in_epoch = self.epoch + 1, 0


def rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(
    out_dir: PathLike,
    *,
    kind: str,
    recipe: Dict[str, Any],
    data: Dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    bank: Optional[Dict[str, torch.Tensor]],
    position: Position,
    rows: List[List[float]],
    world_size: int = 1,
) -> Path:
    """Write ``out_dir/last_state.pt``: everything a resumed run needs to continue bit-identically.
    ``bank``: the whole history bank's state dict (None without refresh)."""
    return save_resume_state(out_dir, {
        "kind": kind, "recipe": recipe, "data": data,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "bank": bank if bank is not None else {},
        "rng": rng_state(), "epoch": position.epoch, "step_in_epoch": position.step_in_epoch,
        "global_step": position.global_step, "rows": rows, "world_size": world_size,
    })  # fmt: skip


def restore_training_state(
    out_dir: PathLike,
    *,
    recipe: Dict[str, Any],
    data: Dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    bank: Optional[Any],
) -> Tuple[Position, List[List[float]]]:
    """Load ``out_dir/last_state.pt`` into ``model``, ``optimizer``, ``bank`` and the RNGs, after checking
    that ``recipe`` and the patches (``data["fingerprint"]``) are those of the interrupted run.
    Returns the position to continue from and the loss rows so far."""
    state = read_training_state(out_dir, recipe=recipe, data=data)
    if bank is not None:
        bank.load_state_dict(state["bank"])
    return apply_training_state(state, model=model, optimizer=optimizer)


def read_training_state(out_dir: PathLike, *, recipe: Dict[str, Any], data: Dict[str, Any]) -> Dict[str, Any]:
    """``out_dir/last_state.pt``, checked against ``recipe`` and ``data`` (see :func:`restore_training_state`)."""
    state = load_resume_state(out_dir)
    changed = sorted(
        k for k in set(recipe) | set(state["recipe"])
        if k not in RESUMABLE_CHANGES and recipe.get(k) != state["recipe"].get(k)
    )  # fmt: skip
    if changed or state["data"]["fingerprint"] != data["fingerprint"]:
        what = ", ".join(changed) if changed else "the training patches"
        raise ValueError(f"cannot resume {Path(out_dir) / RESUME_FILE}: {what} differ(s) from the interrupted run")
    return state


def apply_training_state(
    state: Dict[str, Any], *, model: nn.Module, optimizer: torch.optim.Optimizer
) -> Tuple[Position, List[List[float]]]:
    """Load a read state into ``model``, ``optimizer`` and the RNGs (the bank is the caller's:
    whole on one process, a shard on each rank); returns the position and the loss rows."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    position = Position(state["epoch"], state["step_in_epoch"], state["global_step"])
    return position, [list(row) for row in state["rows"]]


def save_resume_state(out_dir: PathLike, state: Dict[str, Any]) -> Path:
    path = Path(out_dir) / RESUME_FILE
    _torch_save_atomic(state, path)
    return path


def load_resume_state(out_dir: PathLike) -> Dict[str, Any]:
    path = Path(out_dir) / RESUME_FILE
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist (run without --resume to start)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"cannot read resume state {path}: {error}") from error
