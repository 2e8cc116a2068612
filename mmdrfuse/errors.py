"""The project's errors: bad input is reported in one line naming the file; SIGTERM ends a run like Ctrl-C."""
from __future__ import annotations


class DataError(ValueError):
    """Bad input data: the message names the offending file(s)."""


class Terminated(KeyboardInterrupt):
    """Raised by the CLI's SIGTERM handler, so every cleanup that runs for Ctrl-C runs for
    ``timeout``, Slurm and ``docker stop`` too (exit status 143 instead of 130)."""
