"""Shared fixtures. Material in ../shared (real images, released weights) is optional:
tests that need it skip cleanly when it is absent, as in a user's clone."""
from __future__ import annotations

import os
import subprocess
import sys
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


def _make_llvip(base: Path, *, train: int = 4, test: int = 2, size=(160, 128), seed: int = 0, **scene) -> Path:
    from mmdrfuse.config import defaults
    from mmdrfuse.data.synthetic import generate

    folder = base / f"llvip-{train}-{test}-{size[0]}x{size[1]}-{seed}"
    settings = {**defaults("prepare_synthetic"), "train": train, "test": test, "size": size, "seed": seed, **scene}
    return generate(folder, progress=False, **settings)


@pytest.fixture
def make_llvip(tmp_path_factory):
    """``make_llvip(train=4, test=2, size=(160, 128), seed=0, **scene) -> root``: a fresh SYNTHETIC
    LLVIP-like folder (real layout and VOC XML), for tests that modify it."""
    base = tmp_path_factory.mktemp("llvip")
    return lambda **options: _make_llvip(base, **options)


@pytest.fixture(scope="module")
def make_shared_llvip(tmp_path_factory):
    """``make_llvip`` for a whole test module: the same arguments give the same folder, made once.
    Tests must not modify it."""
    base = tmp_path_factory.mktemp("llvip-shared")
    made = {}

    def make(**options):
        key = repr(sorted(options.items()))
        if key not in made:
            made[key] = _make_llvip(base, **options)
        return made[key]

    return make


@pytest.fixture
def random_weights(tmp_path_factory):
    """``random_weights(kind="student", seed=0, path=None) -> path``: a state dict of a randomly
    initialised network, saved as a checkpoint ``mmdrfuse fuse --weights`` reads."""
    base = tmp_path_factory.mktemp("weights")

    def make(kind: str = "student", seed: int = 0, path=None) -> Path:
        from mmdrfuse.fusion.networks import build_model

        torch.manual_seed(seed)
        path = Path(path) if path is not None else base / f"{kind}-{seed}.pth"
        torch.save(build_model(kind).state_dict(), path)
        return path

    return make


@pytest.fixture(scope="session")
def toy_weights(tmp_path_factory):
    """``scripts/train_weights.py --toy`` run once per session the way the bare GPU machine runs it
    (from the checkout, with PYTHONPATH, the detection stack made unimportable): ``--recipes paper``,
    then both recipes into the same folder. Returns ``{"out", "first", "second", "blocked",
    "paper_teacher_after_first", "release_after_first"}`` (the CompletedProcess of each call). Tests must not modify ``out``."""
    from helpers import SITECUSTOMIZE, tiny_llvip

    base = tmp_path_factory.mktemp("toy-weights")
    llvip = tiny_llvip(base / "llvip")
    (base / "site").mkdir()
    (base / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(base / "site"), str(REPO)])}

    def call(*args):
        return subprocess.run([sys.executable, str(REPO / "scripts" / "train_weights.py"), *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)

    blocked = subprocess.run([sys.executable, "-c", "import scipy"], env=env, capture_output=True, text=True)
    out = base / "weights"
    first = call("--out", str(out), "--toy", "--llvip", str(llvip), "--recipes", "paper")
    teacher = out / "paper" / "teacher" / "teacher.pth"
    after_first = teacher.read_bytes() if teacher.is_file() else None
    release_after_first = (out / "release").exists()
    second = call("--out", str(out), "--toy", "--llvip", str(llvip)) if first.returncode == 0 else first
    return {"out": out, "first": first, "second": second, "blocked": blocked, "paper_teacher_after_first": after_first,
            "release_after_first": release_after_first}
