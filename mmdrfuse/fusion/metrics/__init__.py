"""Fusion quality metrics (evaluation) and the differentiable SSIM / GMSD used by dynamic refresh."""
