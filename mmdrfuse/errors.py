"""The project's error for bad input: every command reports it in one line naming the file."""
from __future__ import annotations


class DataError(ValueError):
    """Bad input data: the message names the offending file(s)."""
