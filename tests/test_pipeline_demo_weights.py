"""The demo's student: the package's shipped one when mmdrfuse/weights/student.pth exists (here a
tmp folder standing in for it, holding the toy run's students), else the CPU toy it trains."""
from __future__ import annotations

import json
import shutil

import pytest

from mmdrfuse.errors import DataError
from mmdrfuse.fusion import infer
from mmdrfuse.pipeline import demo, stages
from mmdrfuse.pipeline.config import networks_to_train
from mmdrfuse.pipeline.run import check_config, merge, run_pipeline


@pytest.fixture
def shipped(tmp_path, monkeypatch, toy_weights):
    """A stand-in for mmdrfuse/weights: ``put(recipe)`` ships the toy run's student and teacher of ``recipe``."""
    folder = tmp_path / "package-weights"
    folder.mkdir()
    monkeypatch.setattr(infer, "WEIGHTS_DIR", folder)

    def put(recipe):
        for kind in ("student", "teacher"):
            shutil.copyfile(toy_weights["out"] / recipe / kind / f"{kind}.pth", folder / f"{kind}.pth")
        return folder

    return put


def test_without_shipped_weights_the_demo_trains_as_before(shipped):
    config, used = demo.choose_networks(demo.demo_config(), "auto")
    assert config == demo.demo_config() and used["student"] == "trained"
    assert networks_to_train(check_config(config)) == ["teacher", "student"]
    assert "demo-trained CPU toy (20 steps" in demo.describe_student(used, config)
    with pytest.raises(DataError, match="ships no student"):
        demo.choose_networks(demo.demo_config(), "shipped")


def test_shipped_student_replaces_training(shipped):
    folder = shipped("paper")
    for quick in (False, True):  # --quick also fuses with the teacher: the shipped one
        config, used = demo.choose_networks(demo.demo_config(quick), "auto")
        assert used["student"] == "shipped" and config["student"]["weights"] == str(folder / "student.pth")
        assert networks_to_train(check_config(config)) == []
        assert (config.get("teacher", {}).get("weights") == str(folder / "teacher.pth")) == quick
        assert "shipped student" in demo.describe_student(used, config)
    config, used = demo.choose_networks(demo.demo_config(), "train")  # training stays available
    assert used["student"] == "trained" and networks_to_train(check_config(config)) == ["teacher", "student"]


class _Stop(Exception):
    pass


def _fuse_key(config, out, monkeypatch):
    """Run the pipeline up to the student's fused images; returns the fuse stage's folder name (its key)."""
    def no_training(*args, **kwargs):
        raise AssertionError("a fusion network was trained")

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(stages, "train_network", no_training)
    monkeypatch.setattr(stages, "build_dataset", stop)
    with pytest.raises(_Stop):
        run_pipeline(config, out, progress=False, log=lambda *a: None)
    (folder,) = [p.name for p in out.iterdir() if p.name.startswith("fuse-student-") and (p / "DONE").is_file()]
    return folder


@pytest.mark.slow
def test_the_shipped_file_content_enters_the_cache_key(shipped, tmp_path, monkeypatch):
    quick = merge(demo.demo_config(quick=True), {"fuse": {"methods": ["student"]}})
    shipped("paper")
    config, _ = demo.choose_networks(quick, "auto")
    first = _fuse_key(config, tmp_path / "run", monkeypatch)
    assert _fuse_key(config, tmp_path / "again", monkeypatch) == first  # the same file: the same key
    shipped("release")  # other content under the same path
    config, _ = demo.choose_networks(quick, "auto")
    assert _fuse_key(config, tmp_path / "other", monkeypatch) != first


def test_the_report_says_which_student_it_used(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# Report\n\n| method | mAP |\n")
    (report / "results.json").write_text('{"methods": {"student": {}}}')
    used = {"student": "shipped", "weights": "/x/student.pth", "teacher": None}
    demo._note_in_report(report, used, "The student method is the package's shipped student (/x/student.pth).")
    assert (report / "report.md").read_text().endswith("| method | mAP |\n\nThe student method is the package's shipped student (/x/student.pth).\n")
    results = json.loads((report / "results.json").read_text())
    assert results["methods"] == {"student": {}} and results["student_weights"]["student"] == "shipped"
