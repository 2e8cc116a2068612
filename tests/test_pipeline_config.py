"""A pipeline config is checked WHOLE before any stage runs (issue 14, item 5): types, missing
sections and keys, unknown keys, YAML syntax; one line naming the file and the key."""
import pytest

from mmdrfuse.errors import DataError
from mmdrfuse.pipeline.config import check_config, load_config, merge
from mmdrfuse.pipeline.run import run_pipeline

BASE = {"data": {"root": "LLVIP"}, "prepare": {"subset": {"train": 10, "val": 2}}, "fuse": {"methods": ["max"]},
        "detect": {"epochs": 3}}


def test_defaults_of_the_commands_fill_the_sections():
    config = check_config(BASE)
    assert config["detect"] == {"model": "yolov5s.yaml", "weights": "yolov5su.pt", "epochs": 3, "batch": 16,
                                "optimizer": "SGD", "imgsz": 640, "seed": 0, "seeds": None, "close_mosaic": 10, "warmup_epochs": 3.0,
                                "mosaic": 1.0, "amp": False, "bootstrap": 1000}
    assert config["prepare"]["subset"] == {"train": 10, "val": 2, "seed": 0}
    assert config["fuse"] == {"scaling": "minmax", "batch": 8, "methods": ["max"]}
    assert "patches" not in config["prepare"]  # no network to train
    assert BASE["detect"] == {"epochs": 3}  # the caller's mapping is not modified


@pytest.mark.parametrize("change, message", [
    ({"detect": {"epochs": "one"}}, "detect: epochs must be an integer, got 'one'"),
    ({"detect": {"epochs": 1.5}}, "detect: epochs must be an integer"),
    ({"fuse": {"batch": [1, 2]}}, "fuse: batch must be an integer"),
    ({"prepare": {"subset": {"train": None}}}, "prepare.subset: train must be an integer, got None"),
    ({"teacher": {"epochs": 1, "lr": "fast"}, "fuse": {"methods": ["teacher"]}}, "teacher: lr must be a number"),
    ({"fuse": {"methods": ["median"]}}, "unknown built-in"),
    ({"detect": {"epoch": 3}}, "unknown option 'epoch'"),
    ({"detcet": {}}, "unknown section"),
    ({"data": {"root": "x", "synthetic": {"train": 1}}}, "exactly one"),
    ({"data": {"root": None, "synthetic": {"size": 320}}}, "data.synthetic: size must be a string"),
    ({"warm_start": {"synthetic": {"train": 2}, "epochs": "many"}}, "warm_start: epochs must be an integer"),
    ({"detect": {"seeds": "0,one"}}, "detect.seeds must be comma-separated integers"),
    ({"detect": {"seeds": "0,1,0"}}, "detect.seeds repeats a seed"),
    ({"jobs": 0}, "jobs must be at least 1, got 0"),
    ({"jobs": "two"}, "jobs must be an integer"),
])
def test_wrong_values_anywhere_are_refused(change, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_config(merge(BASE, change))


def test_missing_sections_and_keys_are_named():
    with pytest.raises(DataError, match="prepare.subset is missing"):
        check_config({**BASE, "prepare": {"patches": {"pairs": 2}}})
    with pytest.raises(DataError, match="prepare.patches is missing"):
        check_config(merge(BASE, {"fuse": {"methods": ["student"]}}))  # the student is trained: it needs patches
    with pytest.raises(DataError, match="section 'detect' is missing"):
        check_config({k: v for k, v in BASE.items() if k != "detect"})
    # given weights: nothing to train, no patches needed
    assert check_config(merge(BASE, {"fuse": {"methods": ["student"]}, "student": {"weights": "s.pth"}}))


def test_a_bad_later_section_stops_the_run_before_any_stage(tmp_path):
    config = merge(BASE, {"data": {"root": str(tmp_path / "LLVIP")}, "detect": {"epochs": "one"}})
    with pytest.raises(DataError, match="epochs"):
        run_pipeline(config, tmp_path / "run", log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_missing_detector_weights_stop_the_pipeline_before_any_stage(tmp_path, monkeypatch):
    from mmdrfuse.detection import yolo_offline

    monkeypatch.setattr(yolo_offline, "is_online", lambda: False)
    config = merge(BASE, {"data": {"root": str(tmp_path / "LLVIP")}, "detect": {"model": "yolov5n.yaml",
                                                                                  "weights": "yolov5x-not-here.pt"}})
    with pytest.raises(DataError, match="--weights none"):
        run_pipeline(config, tmp_path / "run", log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_yaml_syntax_error_names_the_file(tmp_path, capsys):
    from mmdrfuse.cli import main

    config = tmp_path / "broken.yaml"
    config.write_text("data: [x\n")
    with pytest.raises(DataError, match="broken.yaml is not valid YAML"):
        load_config(config)
    assert main(["pipeline", str(config)]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml" in err and len(err.strip().splitlines()) == 1


def test_merge_is_deep_and_leaves_the_base_alone():
    merged = merge(BASE, {"prepare": {"subset": {"val": 5}}, "detect": {"epochs": 1}})
    assert merged["prepare"]["subset"] == {"train": 10, "val": 5} and merged["detect"]["epochs"] == 1
    assert BASE["prepare"]["subset"]["val"] == 2


def test_training_seeds_are_separate_from_the_subset_seed():
    from mmdrfuse.pipeline.config import training_seeds

    config = check_config(merge(BASE, {"prepare": {"subset": {"seed": 7}}, "detect": {"seeds": [0, 1, 2]}}))
    assert config["detect"]["seeds"] == "0,1,2" and training_seeds(config["detect"]) == [0, 1, 2]
    assert config["prepare"]["subset"]["seed"] == 7
    assert training_seeds(check_config(merge(BASE, {"detect": {"seed": 4}}))["detect"]) == [4]  # the paper: one seed
    assert training_seeds(check_config(merge(BASE, {"detect": {"seeds": 3}}))["detect"]) == [3]
