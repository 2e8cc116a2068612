"""The repository passes its own ruff configuration (pyproject.toml's [tool.ruff]); skipped where
ruff is not installed (it is in the ``test`` extra)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def ruff_command():
    """``python -m ruff`` when the ruff package is importable, else a ``ruff`` on PATH, else None."""
    try:
        import ruff  # noqa: F401
    except ImportError:
        found = shutil.which("ruff")
        return [found] if found else None
    return [sys.executable, "-m", "ruff"]


def test_ruff_check_is_clean():
    command = ruff_command()
    if command is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run([*command, "check", "--no-cache", "--output-format", "concise", str(REPO)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
