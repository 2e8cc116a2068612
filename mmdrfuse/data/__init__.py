"""Datasets and image I/O. Depends on nothing else in mmdrfuse."""
