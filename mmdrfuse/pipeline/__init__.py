"""Orchestration: the fuse-then-detect pipeline, ``detect`` (the pipeline without its training stages) and the demo."""
