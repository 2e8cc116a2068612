"""Conversion of the network's [-1, 1] Tanh output to 8-bit images.

``minmax`` is what produced the paper's numbers: the released code saved float32 outputs
with the old ``scipy.misc.imsave``, which byte-scaled each image from its own min..max to
0..255 (``bytescale``: ``(x - min) * (255 / (max - min))`` in float32, clip, add 0.5,
truncate). ``clip`` keeps the raw values in [0, 1] and rounds.
"""
from __future__ import annotations

import numpy as np

SCALINGS = ("minmax", "clip")


def to_uint8(image: np.ndarray, scaling: str = "minmax") -> np.ndarray:
    """float (H, W) -> uint8 (H, W) per ``scaling``; a constant image maps to 0 under minmax.

    Computed in float32, as ``bytescale`` did on the network's float32 output.
    """
    scaled = np.array(image, dtype=np.float32)  # a private copy, modified in place below
    if scaling == "minmax":
        low, high = scaled.min(), scaled.max()
        scaled -= low
        if high > low:
            scaled *= np.float32(255.0 / (float(high) - float(low)))
    elif scaling == "clip":
        scaled *= np.float32(255.0)
    else:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled += np.float32(0.5)
    return scaled.astype(np.uint8)
