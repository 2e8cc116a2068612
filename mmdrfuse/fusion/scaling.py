"""Conversion of the network's [-1, 1] Tanh output to 8-bit images.

``minmax`` is what produced the paper's numbers: the released code saved float outputs
with the old ``scipy.misc.imsave``, which byte-scaled each image from its own min..max to
0..255 (``bytescale``: scale, add 0.5, clip, truncate). ``clip`` keeps the raw values in
[0, 1] and rounds.
"""
from __future__ import annotations

import numpy as np

SCALINGS = ("minmax", "clip")


def to_uint8(image: np.ndarray, scaling: str = "minmax") -> np.ndarray:
    """float (H, W) -> uint8 (H, W) per ``scaling``; a constant image maps to 0 under minmax."""
    image = np.asarray(image, dtype=np.float64)
    if scaling == "minmax":
        low, high = float(image.min()), float(image.max())
        scale = 255.0 / (high - low) if high > low else 1.0
        return np.clip((image - low) * scale + 0.5, 0, 255).astype(np.uint8)
    if scaling == "clip":
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
