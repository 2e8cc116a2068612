"""The one place that turns a ``--device`` string into a torch device for the fusion stage."""
from __future__ import annotations

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error.

    Ultralytics-style GPU indices (``0``, ``0,1``) are accepted too, so that one ``--device``
    serves the detector and the fusion networks; the fusion runs on the first one.
    """
    device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.replace(",", "").isdigit():
        device = f"cuda:{device.split(',')[0]}"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but no CUDA GPU is available (use --device cpu or auto)")
    return resolved
