"""Training outputs: plain weights, their metadata, and the resume state.

* ``<name>.pth``: a plain state dict with the released key names (``conv1.1.weight`` ...), so
  ``networks.load_model`` and ``mmdrfuse fuse --weights`` read it like the released ``*.model``.
* ``<name>.json``: what produced it (recipe, perceptual backbone, data, seed, code version,
  parameter count, progress).
* ``last_state.pt``: everything ``--resume`` needs (model, optimizer, history bank, RNG states,
  epoch/step, loss history), kept apart so the weights file stays a plain state dict.

Every file is written under a temporary name and renamed into place.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import torch
from torch import nn

import mmdrfuse
from mmdrfuse.files import write_text_atomic
from mmdrfuse.fusion.networks import count_parameters

PathLike = Union[str, os.PathLike]
RESUME_FILE = "last_state.pt"


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
