"""Stage caching of the pipeline: done stages are skipped, changed settings rerun, interrupted
stages continue, and --from forces a stage and those after it."""
import json

import pytest

from mmdrfuse.errors import DataError
from mmdrfuse.pipeline.run import Run, check_config, merge


def make_stage(calls, name):
    def body(folder):
        calls.append(name)
        (folder / "output.txt").write_text(name)
        return {"file": str(folder / "output.txt")}
    return body


def run_two(out, calls, *, first=None, second=None, force_from=None):
    run = Run(out, force_from, log=lambda *a: None)
    run.stage("prepare", first or {"pairs": 4}, [], make_stage(calls, "prepare"))
    run.stage("fuse", second or {"methods": ["max"]}, ["prepare"], make_stage(calls, "fuse"))
    return run


def test_done_stage_is_skipped(tmp_path):
    calls = []
    first = run_two(tmp_path, calls)
    assert calls == ["prepare", "fuse"] and first.ran == ["prepare", "fuse"]
    for name in ("prepare", "fuse"):
        folder = tmp_path / f"{name}-{first.keys[name]}"
        assert json.loads((folder / "DONE").read_text())["file"] == str(folder / "output.txt")
    again = run_two(tmp_path, calls)
    assert calls == ["prepare", "fuse"] and again.ran == []
    assert again.outputs["fuse"]["file"] == first.outputs["fuse"]["file"]


def test_changed_setting_reruns_that_stage_and_those_after(tmp_path):
    calls = []
    first = run_two(tmp_path, calls)
    calls.clear()
    second = run_two(tmp_path, calls, second={"methods": ["max", "average"]})
    assert calls == ["fuse"]
    assert second.keys["prepare"] == first.keys["prepare"] and second.keys["fuse"] != first.keys["fuse"]
    calls.clear()
    third = run_two(tmp_path, calls, first={"pairs": 8})
    assert calls == ["prepare", "fuse"]  # an upstream change changes the downstream key
    assert third.keys["fuse"] not in (first.keys["fuse"], second.keys["fuse"])


def test_interrupted_stage_runs_again_and_finished_ones_do_not(tmp_path):
    calls = []

    def crash(folder):
        (folder / "half.txt").write_text("partial")
        raise KeyboardInterrupt

    run = Run(tmp_path, log=lambda *a: None)
    run.stage("prepare", {"pairs": 4}, [], make_stage(calls, "prepare"))
    with pytest.raises(KeyboardInterrupt):
        run.stage("fuse", {"methods": ["max"]}, ["prepare"], crash)
    assert not (tmp_path / f"fuse-{run.keys['fuse']}" / "DONE").exists()
    resumed = run_two(tmp_path, calls)
    assert calls == ["prepare", "fuse"] and resumed.ran == ["fuse"]


def test_from_forces_the_stage_and_later_ones(tmp_path):
    calls = []
    run_two(tmp_path, calls)
    calls.clear()
    forced = run_two(tmp_path, calls, force_from="fuse")
    assert calls == ["fuse"] and forced.ran == ["fuse"]
    calls.clear()
    run_two(tmp_path, calls, force_from="prepare")
    assert calls == ["prepare", "fuse"]
    with pytest.raises(DataError, match="--from"):
        Run(tmp_path, "nonsense")


def test_config_checks_and_merge():
    base = {"data": {"root": "LLVIP"}, "prepare": {"subset": {"train": 10, "val": 2}}, "fuse": {"methods": ["max"]}, "detect": {"epochs": 3}}
    assert check_config(base) is base
    with pytest.raises(DataError, match="unknown section"):
        check_config({**base, "detcet": {}})
    with pytest.raises(DataError, match="exactly one"):
        check_config({**base, "data": {"root": "x", "synthetic": {"train": 1}}})
    with pytest.raises(DataError, match="unknown built-in"):
        check_config({**base, "fuse": {"methods": ["median"]}})
    merged = merge(base, {"prepare": {"subset": {"val": 5}}, "detect": {"epochs": 1}})
    assert merged["prepare"]["subset"] == {"train": 10, "val": 5} and merged["detect"]["epochs"] == 1
    assert base["prepare"]["subset"]["val"] == 2  # the base is not modified


def test_missing_detector_weights_stop_the_pipeline_before_any_stage(tmp_path, monkeypatch):
    from mmdrfuse.detection import yolo_offline
    from mmdrfuse.pipeline.run import run_pipeline

    monkeypatch.setattr(yolo_offline, "is_online", lambda: False)
    config = {"data": {"root": str(tmp_path / "LLVIP")}, "prepare": {"subset": {"train": 4, "val": 2}},
              "fuse": {"methods": ["max"]}, "detect": {"model": "yolov5n.yaml", "weights": "yolov5x-not-here.pt"}}
    with pytest.raises(DataError, match="--weights none"):
        run_pipeline(config, tmp_path / "run", log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_dataset_fingerprint_ignores_rebuild_times_and_label_caches(tmp_path):
    import os

    from mmdrfuse.pipeline.compare import folder_fingerprint

    (tmp_path / "labels").mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "labels" / "1.txt").write_text("0 0.5 0.5 0.1 0.2\n")
    (tmp_path / "images" / "1.png").write_bytes(b"\x89PNG" + bytes(100))
    before = folder_fingerprint(tmp_path)
    os.utime(tmp_path / "labels" / "1.txt", ns=(1, 1))  # a rebuild writes the same files anew
    (tmp_path / "labels" / "train.cache").write_bytes(b"ultralytics")
    assert folder_fingerprint(tmp_path) == before
    (tmp_path / "labels" / "1.txt").write_text("0 0.5 0.5 0.1 0.3\n")
    assert folder_fingerprint(tmp_path) != before
