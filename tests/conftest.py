"""Shared fixtures. Material in ../shared (real images, released weights) is optional:
tests that need it skip cleanly when it is absent, as in a user's clone."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MMDRFUSE_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path inside ../shared, or skip the calling test when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (../shared is not available)")
    return path


@pytest.fixture
def official_weights():
    """Paths of the authors' released student and teacher state dicts."""
    return {
        "student": shared_path("weights", "official", "student.model"),
        "teacher": shared_path("weights", "official", "teacher.model"),
    }


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on a small shared CPU more threads oversubscribe the cores (several times slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
