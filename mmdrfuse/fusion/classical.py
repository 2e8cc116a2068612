"""Classical pixel-level fusion baselines for the detection comparison.

Every method is a pure function ``fuse_<name>(ir, vi) -> fused`` of two uint8 gray images of
one shape (H, W), returning uint8 (H, W):

- average:   F = round((IR + VI) / 2)
- max:       F = max(IR, VI), element-wise
- laplacian: Burt-Adelson Laplacian-pyramid fusion. With G_k the Gaussian pyramid
  (G_0 = image, G_{k+1} = pyrDown(G_k)) and L_k = G_k - pyrUp(G_{k+1}) the band-pass
  levels, the fused pyramid takes, per pixel, the detail coefficient of larger magnitude,
  L^F_k = L^IR_k if |L^IR_k| >= |L^VI_k| else L^VI_k (k < K), and the average of the
  coarsest residuals, G^F_K = (G^IR_K + G^VI_K) / 2; the image is rebuilt by
  F = L^F_0 + pyrUp(L^F_1 + pyrUp(... + pyrUp(G^F_K))), rounded and clipped to 0..255.
"""
from __future__ import annotations

from typing import Callable, Dict, List

import cv2
import numpy as np


def _check_pair(ir: np.ndarray, vi: np.ndarray) -> None:
    if ir.dtype != np.uint8 or vi.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {ir.dtype} and {vi.dtype}")
    if ir.ndim != 2 or ir.shape != vi.shape:
        raise ValueError(f"expected two gray images of one shape (H, W), got {ir.shape} and {vi.shape}")


def fuse_average(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Pixel average, uint8 (H, W) x2 -> uint8 (H, W); halves are rounded up."""
    _check_pair(ir, vi)
    return ((ir.astype(np.uint16) + vi.astype(np.uint16) + 1) // 2).astype(np.uint8)


def fuse_max(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Pixel maximum, uint8 (H, W) x2 -> uint8 (H, W)."""
    _check_pair(ir, vi)
    return np.maximum(ir, vi)


def _laplacian_pyramid(image: np.ndarray, levels: int) -> List[np.ndarray]:
    gaussian = [image]
    for _ in range(levels):
        gaussian.append(cv2.pyrDown(gaussian[-1]))
    bands = [
        fine - cv2.pyrUp(coarse, dstsize=(fine.shape[1], fine.shape[0]))
        for fine, coarse in zip(gaussian[:-1], gaussian[1:])
    ]
    return bands + [gaussian[-1]]


def fuse_laplacian(ir: np.ndarray, vi: np.ndarray, levels: int = 4) -> np.ndarray:
    """Laplacian-pyramid fusion (max-abs details, averaged base), uint8 (H, W) x2 -> uint8 (H, W).

    ``levels`` is reduced for small images so the coarsest level keeps at least 8 pixels a side.
    """
    _check_pair(ir, vi)
    levels = max(0, min(levels, int(np.log2(max(1, min(ir.shape) // 8)))))
    pyr_ir = _laplacian_pyramid(ir.astype(np.float32), levels)
    pyr_vi = _laplacian_pyramid(vi.astype(np.float32), levels)
    fused = [np.where(np.abs(a) >= np.abs(b), a, b) for a, b in zip(pyr_ir[:-1], pyr_vi[:-1])]
    image = (pyr_ir[-1] + pyr_vi[-1]) / 2
    for band in reversed(fused):
        image = band + cv2.pyrUp(image, dstsize=(band.shape[1], band.shape[0]))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


CLASSICAL_METHODS: Dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "average": fuse_average,
    "max": fuse_max,
    "laplacian": fuse_laplacian,
}
