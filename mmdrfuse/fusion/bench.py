"""Commands of mmdrfuse.fusion.bench (see mmdrfuse/cli.py)."""
from __future__ import annotations


def register(subparsers) -> None:
    """Add this module's commands to the top-level parser."""
