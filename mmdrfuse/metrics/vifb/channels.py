"""VIFB's colour rules: MATLAB's ``rgb2gray`` and the per-channel dispatch every metric's wrapper does.

Every ``metrics*.m`` wrapper reads ``b`` (bands of the fused image) and ``b1`` (bands of the
infrared image) and then

* ``b == 1`` (gray fused image): scores the images as they are; the metric converts colour
  sources with ``rgb2gray``;
* ``b1 == 1`` (colour fused, gray infrared): averages over channels k the metric of
  ``(vi(:, :, k), ir, fused(:, :, k))``;
* otherwise: averages over k the metric of ``(vi(:, :, k), ir(:, :, k), fused(:, :, k))``.

Both colour branches index ``vi(:, :, k)``: with a gray visible image MATLAB stops with an
index error there, so VIFB scores no such triple (:func:`channel_triples` raises ValueError).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import cv2
import numpy as np

# MATLAB's rgb2gray: the first row of the inverse of the NTSC (YIQ) matrix.
GRAY_WEIGHTS = np.linalg.inv([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])[0]


def rgb2gray(image: np.ndarray, *, rounded: bool) -> np.ndarray:
    """MATLAB's ``rgb2gray`` of an (H, W, 3) RGB array; an (H, W) array is returned as it is.

    .. math:: Y = 0.298936\\,R + 0.587043\\,G + 0.114021\\,B

    ``rounded``: the input is uint8 in MATLAB, so the result is rounded (half away from zero) to
    uint8; otherwise (a double input) it stays float64.
    """
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    gray = image.astype(np.float64) @ GRAY_WEIGHTS
    if rounded:
        return np.clip(np.floor(gray + 0.5), 0, 255).astype(np.uint8)
    return gray


def check_triple(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray) -> None:
    """Shapes: each (H, W) or (H, W, 3), one (H, W) for all."""
    for image, what in ((vi, "visible"), (ir, "infrared"), (fused, "fused")):
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"the {what} image must be (H, W) gray or (H, W, 3) RGB, got shape {image.shape}")
    if not vi.shape[:2] == ir.shape[:2] == fused.shape[:2]:
        raise ValueError(f"sizes differ: visible {vi.shape[:2]}, infrared {ir.shape[:2]}, fused {fused.shape[:2]}")


def channel_triples(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray, *, fused_planes: Optional[List[np.ndarray]] = None
                    ) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The (vi, ir, fused) triples whose metric VIFB averages (one for a gray fused image).

    ``fused_planes``: :func:`colour_planes` of a colour ``fused``, when the caller has them already.
    """
    check_triple(vi, ir, fused)
    if fused.ndim == 2:
        return [(vi, ir, fused)]
    if vi.ndim == 2:
        raise ValueError(
            "VIFB's code cannot score a colour fused image against a gray visible image "
            "(its wrappers index vi(:, :, k) and MATLAB stops there)"
        )
    vi_planes = colour_planes(vi)
    fused_planes = colour_planes(fused) if fused_planes is None else fused_planes
    ir_planes = [ir] * 3 if ir.ndim == 2 else colour_planes(ir)
    return list(zip(vi_planes, ir_planes, fused_planes))


def colour_planes(image: np.ndarray) -> List[np.ndarray]:
    """The three channels of an (H, W, 3) image, as contiguous planes for uint8 (what the C kernels
    take; OpenCV splits them in one pass), else as views."""
    if image.dtype == np.uint8:
        return list(cv2.split(image))
    return [image[:, :, k] for k in range(image.shape[2])]
