"""Fusion quality metrics (evaluation) and the differentiable SSIM / GMSD used by dynamic refresh.

``evaluate_pair(fused, ir, vi)`` scores one pair of numpy images, ``evaluate_folders`` a folder;
each metric is also a pure function of (B, 1, H, W) torch tensors on the 0..255 scale
(``METRICS[name](fused, ir, vi) -> (B,)``).

The names below load lazily, so that importing the ``evaluate`` command (``mmdrfuse --help``)
does not import torch.
"""
import importlib

__all__ = [
    "ALL_METRICS",
    "LOWER_IS_BETTER",
    "METRICS",
    "PAPER_METRICS",
    "evaluate_batch",
    "evaluate_folders",
    "evaluate_methods",
    "evaluate_pair",
]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("mmdrfuse.metrics.evaluate"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
