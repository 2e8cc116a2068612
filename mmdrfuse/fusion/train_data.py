"""The training patches as the trainer reads them: opened and checked, fingerprinted, fed in batches."""
from __future__ import annotations

import hashlib
from typing import List, Tuple

import numpy as np
import torch

from mmdrfuse.errors import DataError

MIN_PATCH = 16  # relu5_4 sits after four 2x poolings


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


def open_training_patches(patches, vi_dir=None, limit=None) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """``(ir, vi, names)``: uint8 (N, H, W) arrays and patch names from a patch store folder, an IR
    patch folder with ``vi_dir``, or an object with ``ir`` / ``vi`` arrays; the first ``limit``."""
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


def patches_fingerprint(ir: np.ndarray, names: List[str]) -> str:
    """A short hash of the shape, the names and the first 64 IR patches: enough to refuse resuming on other patches."""
    digest = hashlib.sha1(repr((ir.shape, names[:1000])).encode())
    digest.update(np.ascontiguousarray(ir[: min(len(ir), 64)]).tobytes())
    return digest.hexdigest()[:16]
