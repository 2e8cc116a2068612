"""Commands of mmdrfuse.detection (see mmdrfuse/cli.py)."""
from __future__ import annotations


def register(subparsers) -> None:
    """Add this subpackage's commands to the top-level parser."""
