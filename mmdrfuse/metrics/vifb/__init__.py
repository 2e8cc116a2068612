"""The 13 metrics of the VIFB benchmark (Zhang et al., CVPR-W 2020), as its MATLAB code computes them.

``vifb_scores(vi, ir, fused, metrics)`` scores one triple of uint8 images as MATLAB's ``imread``
returns them ((H, W) gray or (H, W, 3) RGB), in VIFB's argument order (visible, infrared, fused).
See ``docs/metrics.md`` for every formula and how it differs from the default (``mmif``) convention.
"""
from mmdrfuse.metrics.vifb.scores import LOWER_IS_BETTER, VIFB_METRICS, vifb_scores

__all__ = ["LOWER_IS_BETTER", "VIFB_METRICS", "vifb_scores"]
