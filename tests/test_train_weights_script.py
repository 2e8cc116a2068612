"""scripts/train_weights.py --toy end to end, the way the bare GPU machine runs it: from the checkout,
with PYTHONPATH, and with ultralytics, pycocotools, polars, SciPy and scikit-image not importable."""
from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO
from helpers import tiny_llvip

from mmdrfuse.fusion.networks import load_model

SCRIPT = REPO / "scripts" / "train_weights.py"


def load_script():
    spec = importlib.util.spec_from_file_location("train_weights", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_toy_run_trains_both_recipes_without_the_detection_stack(toy_weights):
    # toy_weights (conftest): two calls, as the GPU session may make them, under a blocker of the detection stack.
    assert toy_weights["blocked"].returncode != 0 and "not installed on the GPU machine" in toy_weights["blocked"].stderr
    out, first, done = toy_weights["out"], toy_weights["first"], toy_weights["second"]
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "paper student" in first.stdout and not toy_weights["release_after_first"]  # progress lines reach stdout
    # The second call into the same folder (the GPU session may run one recipe per call): paper is kept.
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("already trained: kept") == 2 and "release student" in done.stdout
    assert (out / "paper" / "teacher" / "teacher.pth").read_bytes() == toy_weights["paper_teacher_after_first"]

    summary = json.loads((out / "summary.json").read_text())
    manifest = json.loads((out / "patches.json").read_text())
    assert summary["toy"] is True and summary["backbone"]["perceptual"] == "vgg19-random"
    assert manifest["count"] == 16 and manifest["shape"] == [32, 32] and len(manifest["ids"]) == 2
    for recipe in ("paper", "release"):
        metadata = json.loads((out / recipe / "metadata.json").read_text())
        assert metadata["patches_sha256"] == manifest["sha256"] and metadata["seed"] == 0
        assert metadata["environment"]["torch"] and "train_weights.py" in metadata["command"]
        for kind, parameters in (("teacher", 556489), ("student", 113)):
            folder = out / recipe / kind
            load_model(kind, folder / f"{kind}.pth")  # what `mmdrfuse fuse --weights` reads
            info = json.loads((folder / f"{kind}.json").read_text())
            assert info["completed"] and info["parameters"] == parameters and info["recipe"]["recipe"] == recipe
            assert len((folder / "losses.csv").read_text().splitlines()) == 1 + 2 * 16 // 4  # 2 epochs of 4 steps
            assert not (folder / "last_state.pt").exists() and not (folder / "checkpoints").exists()
            assert metadata["stages"][kind]["steps"] == 8 and summary["recipes"][recipe][kind]["bytes"] > 0
        teacher = json.loads((out / recipe / "teacher" / "teacher.json").read_text())["recipe"]
        student = json.loads((out / recipe / "student" / "student.json").read_text())["recipe"]
        if recipe == "release":
            assert (teacher["refresh"], teacher["shuffle"], teacher["amp"]) == ("batch", "once", False)
            assert (student["refresh"], student["distill_norm"], student["shuffle"]) == ("batch", "batch", "epoch")
        else:
            assert (teacher["refresh"], teacher["shuffle"], student["distill_norm"]) == ("sample", "epoch", "sample")
    commands = (out / "commands.txt").read_text()
    assert commands.count("scripts/train_weights.py --out") == 2 and commands.count("mmdrfuse train student") == 2
    assert sorted(summary["recipes"]) == ["paper", "release"]


def test_refuses_a_foreign_output_folder_and_missing_samples(tmp_path, capsys):
    script = load_script()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's file")
    llvip = tiny_llvip(tmp_path / "llvip", pairs=1)
    assert script.main(["--out", str(foreign), "--toy", "--llvip", str(llvip)]) == 2
    assert "not an output of scripts/train_weights.py" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert script.main(["--out", str(tmp_path / "o"), "--toy", "--llvip", str(tmp_path / "nowhere")]) == 2
    assert "not an LLVIP folder" in capsys.readouterr().err
    assert script.main(["--out", str(tmp_path / "o"), "--recipes", "paper,mine"]) == 2
    assert "--recipes" in capsys.readouterr().err
