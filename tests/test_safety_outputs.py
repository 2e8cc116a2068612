"""Issue 14: output folders, staging and interrupts. Each test reproduces one defect of the issue."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import settings, write_pairs

from mmdrfuse.cli import main
from mmdrfuse.data.patches import load_patches, prepare_patches
from mmdrfuse.data.synthetic import generate
from mmdrfuse.detection.methods import parse_method
from mmdrfuse.errors import DataError
from mmdrfuse.fusion.infer import fuse_folder

REPO = Path(__file__).resolve().parents[1]
MARKER = ".mmdrfuse.json"  # mmdrfuse.files.MARKER, spelled out so these tests import on the code before it
SYNTHETIC = ["--train", "4", "--test", "2", "--size", "160x128", "--quiet"]


def fuse(weights, ir_dir, vi_dir, out_dir):
    """``fuse_folder`` of the student with the ``fuse`` command's settings (default.yaml), quiet."""
    return fuse_folder(**settings("fuse", weights=weights), ir_dir=ir_dir, vi_dir=vi_dir, out_dir=out_dir, progress=False)


def test_prepare_patches_never_deletes_a_folder_holding_the_input_or_other_files(tmp_path, capsys):
    work = tmp_path / "work"
    assert main(["prepare", "synthetic", "--out", str(work / "llvip"), *SYNTHETIC]) == 0
    (work / "notes.txt").write_text("thesis")
    assert main(["prepare", "patches", "--root", str(work / "llvip"), "--out", str(work), "--size", "64",
                 "--stride", "64", "--quiet"]) == 2
    assert "contains input folder" in capsys.readouterr().err
    assert (work / "notes.txt").read_text() == "thesis" and (work / "llvip" / "Annotations").is_dir()


def test_prepare_refuses_a_foreign_folder_and_replaces_its_own_only_with_overwrite(tmp_path, capsys):
    documents = tmp_path / "Documents"
    documents.mkdir()
    (documents / "cv.txt").write_text("mine")
    assert main(["prepare", "synthetic", "--out", str(documents), *SYNTHETIC]) == 2
    assert "not empty" in capsys.readouterr().err and [p.name for p in documents.iterdir()] == ["cv.txt"]

    out = tmp_path / "syn"
    assert main(["prepare", "synthetic", "--out", str(out), *SYNTHETIC]) == 0
    assert json.loads((out / MARKER).read_text())["command"] == "prepare synthetic"
    assert main(["prepare", "synthetic", "--out", str(out), *SYNTHETIC]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["prepare", "synthetic", "--out", str(out), *SYNTHETIC[:1], "3", *SYNTHETIC[2:], "--overwrite"]) == 0
    assert len(list((out / "infrared" / "train").iterdir())) == 3
    # --overwrite never replaces another command's output
    assert main(["prepare", "patches", "--root", str(out), "--out", str(tmp_path / "store"), "--size", "64",
                 "--stride", "64", "--quiet"]) == 0
    assert main(["prepare", "synthetic", "--out", str(tmp_path / "store"), *SYNTHETIC, "--overwrite"]) == 2
    assert "prepare patches" in capsys.readouterr().err and load_patches(tmp_path / "store")


def test_method_names_cannot_escape_the_output_folder(tmp_path):
    for name in ("../../victim", "a/b", "..", ".hidden"):
        with pytest.raises(DataError, match="plain name"):
            parse_method(f"{name}={tmp_path}")
    assert parse_method(f"my-method_2={tmp_path}")[0] == "my-method_2"


def test_fuse_into_an_existing_output_holds_exactly_the_last_run(tmp_path, random_weights):
    three = write_pairs(tmp_path / "three", [(12, 16)] * 3)
    two = write_pairs(tmp_path / "two", [(12, 16)] * 2)
    out = tmp_path / "o"
    for ir, vi in (three, two):
        fuse(random_weights(), ir, vi, out)
    assert sorted(p.name for p in out.glob("*.png")) == ["000.png", "001.png"]
    manifest = json.loads((out / MARKER).read_text())
    assert manifest["command"] == "fuse" and manifest["settings"]["images"] == 2
    assert manifest["settings"]["inputs"] == [str(two[0].resolve()), str(two[1].resolve())]


def test_fuse_moves_its_outputs_in_one_step(tmp_path, random_weights, monkeypatch):
    ir, vi = write_pairs(tmp_path, [(12, 16)] * 3)
    weights = random_weights()
    real_replace, calls = os.replace, []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the 2nd rename of the run: a partial set must never appear
            raise OSError("disk gone")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        fuse(weights, ir, vi, tmp_path / "o")
    assert not list((tmp_path / "o").glob("*.png"))  # glob of a missing folder is empty too


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sigterm_removes_staging_and_exits_143(tmp_path):
    out = tmp_path / "syn"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "mmdrfuse", "prepare", "synthetic", "--out", str(out),
                                "--train", "400", "--test", "0", "--size", "320x256", "--quiet"],
                               env=env, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".syn.partial-*")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert list(tmp_path.glob(".syn.partial-*")), "the run never started staging"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err.decode()
    assert not list(tmp_path.glob(".syn.*")) and not out.exists()


def test_the_next_run_clears_stale_staging_of_its_own(tmp_path, random_weights):
    dead = _dead_pid()
    stale = tmp_path / f".syn.partial-{dead}-abc123"
    stale.mkdir()
    (stale / "infrared").mkdir()
    alive = tmp_path / f".syn.partial-{os.getppid()}-xyz"  # a live owner: left alone
    alive.mkdir()
    other = tmp_path / f".other.partial-{dead}-abc"  # another output's staging: left alone
    other.mkdir()
    generate(tmp_path / "syn", **settings("prepare_synthetic", train=1, test=0, size=(64, 64)), progress=False)
    assert not stale.exists() and alive.exists() and other.exists()

    out = tmp_path / "fused"
    out.mkdir()
    legacy = out / ".fuse-partial-k2j3"  # left inside --out by earlier versions
    legacy.mkdir()
    old = time.time() - 7200
    os.utime(legacy, (old, old))
    ir, vi = write_pairs(tmp_path / "pairs", [(12, 16)])
    fuse(random_weights(), ir, vi, out)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "000.png"]


def test_prepare_patches_checks_free_space_before_sizing_memory_maps(tmp_path, make_llvip, monkeypatch):
    root = make_llvip(train=2, test=0, size=(128, 128))
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=1024))
    with pytest.raises(DataError, match="free disk space"):
        prepare_patches(root, **settings("prepare_patches", size=64, stride=64), out=tmp_path / "store", progress=False,
                        log=lambda _: None)
    assert not (tmp_path / "store").exists() and not list(tmp_path.glob(".store.*"))
