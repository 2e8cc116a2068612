"""MMDRFuse: a fuse-then-detect pipeline for infrared-visible image fusion.

Subpackages (imports are one-way):
    mmdrfuse.data       datasets, image I/O, patches, YOLO datasets, synthetic data (depends on nothing of ours)
    mmdrfuse.fusion     networks, losses, dynamic refresh, distillation, training, inference, metrics (on data)
    mmdrfuse.detection  YOLO training/validation, per-method comparison, pipeline, demo (on data and fusion)
"""

__version__ = "0.1.0"
