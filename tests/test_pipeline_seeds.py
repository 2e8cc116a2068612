"""Repeated training seeds in the pipeline (issue 11): one cached stage per (method, seed), run as
tasks of mmdrfuse.pipeline.executor; a failed task is named with its method and seed and the
others stay cached; the report's settings (bootstrap) are in no detector's key; ``--manifest``
reuses an exact subset and the report's manifest lists every skipped id; the scratch warning
is printed once. The detector training and the summary are stubs (ultralytics and the
statistics have their own tests); fusion and datasets run for real."""
import json
import warnings
from pathlib import Path

import pytest

from mmdrfuse.cli import main
from mmdrfuse.detection.yolo_train import scratch_warning
from mmdrfuse.errors import DataError
from mmdrfuse.pipeline import stages
from mmdrfuse.pipeline.executor import TasksFailed, run_tasks
from mmdrfuse.pipeline.run import run_pipeline


@pytest.fixture
def stubs(monkeypatch):
    """``trained``: (method, seed) of every detector run; ``summarised``: what summarise was given;
    ``fail``: (method, seed) pairs whose training raises."""
    record = {"trained": [], "summarised": [], "fail": set()}

    def fake_train_detector(data_yaml, out_dir, *, seed, weights, epochs, **protocol):
        name = Path(data_yaml).parents[1].name.split("-")[1]
        message = scratch_warning(weights, epochs)
        if message:  # as the real train_detector does, in every run
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        if (name, seed) in record["fail"]:
            raise RuntimeError(f"out of memory in {name}")
        record["trained"].append((name, seed))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "predictions.json").write_text("[]")
        (out_dir / "ground_truth.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
        return {"map50_95": 0.5, "seed": seed, "predictions": str(out_dir / "predictions.json"),
                "ground_truth": str(out_dir / "ground_truth.json")}

    def fake_summarise(runs, *, fusion_ms, resamples):
        record["summarised"].append({"runs": runs, "resamples": resamples})
        return {"methods": {name: {"seeds": [r["seed"] for r in results]} for name, results in runs.items()}}

    monkeypatch.setattr(stages, "train_detector", fake_train_detector)
    monkeypatch.setattr(stages, "summarise", fake_summarise)
    monkeypatch.setattr(stages, "write_report", lambda folder, results, examples: (folder / "results.json").write_text(
        json.dumps(results)))
    return record


@pytest.fixture
def llvip(make_llvip):
    return make_llvip(train=4, test=3, size=(64, 48), seed=3)


def config(root, **detect):
    return {"data": {"root": str(root)}, "device": "cpu", "prepare": {"subset": {"train": 4, "val": 2, "seed": 0}},
            "fuse": {"methods": ["infrared", "max"]},
            "detect": {"model": "yolov5n.yaml", "weights": "none", "epochs": 1, "batch": 2, "imgsz": 64, **detect}}


def run(root, out, **detect):
    return sorted(run_pipeline(config(root, **detect), out, progress=False, log=lambda *a: None)["ran"])


def test_one_stage_per_method_and_seed_and_the_summary_gets_every_seed(llvip, tmp_path, stubs):
    ran = run(llvip, tmp_path / "run", seeds="0,1")
    assert sorted(stubs["trained"]) == [("infrared", 0), ("infrared", 1), ("max", 0), ("max", 1)]
    assert {"detect/infrared-seed0", "detect/infrared-seed1", "detect/max-seed0", "detect/max-seed1"} <= set(ran)
    (given,) = stubs["summarised"]
    assert {name: [r["seed"] for r in results] for name, results in given["runs"].items()} == {
        "infrared": [0, 1], "max": [0, 1]}
    assert given["resamples"] == 1000  # detect.bootstrap's default
    results = json.loads((tmp_path / "run" / "report" / "results.json").read_text())
    assert results["protocol"]["seeds"] == [0, 1]
    assert "bootstrap" not in results["protocol"]

    # A third seed trains only the new detectors; the first two are reused.
    stubs["trained"].clear()
    ran = run(llvip, tmp_path / "run", seeds="0,1,2")
    assert sorted(stubs["trained"]) == [("infrared", 2), ("max", 2)]
    assert ran == ["detect/infrared-seed2", "detect/max-seed2", "report"]


def test_a_changed_bootstrap_reruns_the_report_only(llvip, tmp_path, stubs):
    run(llvip, tmp_path / "run", seeds="0,1")
    stubs["trained"].clear()
    assert run(llvip, tmp_path / "run", seeds="0,1", bootstrap=200) == ["report"]
    assert stubs["trained"] == [] and stubs["summarised"][-1]["resamples"] == 200


def test_a_failed_task_is_named_with_its_seed_and_the_others_stay_cached(llvip, tmp_path, stubs):
    stubs["fail"].add(("max", 1))
    with pytest.raises(TasksFailed, match=r"1 of 4 detector run\(s\) failed \(max seed 1: RuntimeError: out of memory"):
        run(llvip, tmp_path / "run", seeds="0,1")
    assert sorted(stubs["trained"]) == [("infrared", 0), ("infrared", 1), ("max", 0)]  # the one after it ran too
    assert not list((tmp_path / "run").glob("report-*"))
    stubs["fail"].clear()
    stubs["trained"].clear()
    assert run(llvip, tmp_path / "run", seeds="0,1") == ["detect/max-seed1", "report"]
    assert stubs["trained"] == [("max", 1)]


def test_the_command_line_reports_a_failed_task_in_one_line(llvip, tmp_path, stubs, capsys):
    stubs["fail"].add(("infrared", 0))
    argv = ["detect", "--root", str(llvip), "--out", str(tmp_path / "out"), "--builtin", "infrared,max", "--weights",
            "none", "--train", "4", "--val", "2", "--epochs", "1", "--imgsz", "64", "--seeds", "0,1", "--quiet"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("mmdrfuse detect: error: 1 of 4 detector run(s) failed (infrared seed 0:")


def test_scratch_warning_once_before_any_work(llvip, tmp_path, stubs, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # a warning of every task would show
        run(llvip, tmp_path / "run", seeds="0,1")
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert text.count("learns almost nothing") == 1
    assert captured.err.startswith("warning: a detector trained from scratch")
    run(llvip, tmp_path / "four", seeds="0", epochs=4)
    assert "learns almost nothing" not in capsys.readouterr().err  # 4 epochs: no warning


def test_manifest_reuses_the_exact_ids_and_lists_every_skipped_one(llvip, tmp_path, stubs, capsys):
    skipped_id = sorted(p.stem for p in (llvip / "infrared" / "train").iterdir())[0]
    (llvip / "Annotations" / f"{skipped_id}.xml").unlink()  # a train id (all 4 are drawn) without annotation
    run(llvip, tmp_path / "first")
    record = json.loads((tmp_path / "first" / "report" / "manifest.json").read_text())
    assert record["skipped"]["max"]["no_annotation"] == [skipped_id]
    assert record["skipped"]["infrared"] == {"no_annotation": [skipped_id], "bad_annotation": [], "bad_image": []}

    out = tmp_path / "again"
    argv = ["detect", "--root", str(llvip), "--out", str(out), "--builtin", "infrared,max", "--weights", "none",
            "--train", "1", "--val", "1", "--seed", "5", "--epochs", "4", "--imgsz", "64", "--quiet",
            "--manifest", str(tmp_path / "first" / "report" / "manifest.json")]
    assert main(argv) == 0
    again = json.loads((out / "report" / "manifest.json").read_text())
    assert (again["train"], again["val"]) == (record["train"], record["val"])  # not the 1 + 1 of --train/--val
    assert again["skipped"] == record["skipped"]
    capsys.readouterr()
    assert main(argv[:-1] + [str(tmp_path / "missing.json")]) == 2
    assert "--manifest file does not exist" in capsys.readouterr().err


def parse_count(text):
    return int(text)


def test_local_executor_keeps_order_results_and_errors():
    outcomes = run_tasks(parse_count, [{"text": "3"}, {"text": "three"}, {"text": "4"}])
    assert [o.result for o in outcomes] == [3, None, 4]
    assert [o.ok for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1].error, ValueError) and "invalid literal" in outcomes[1].trace
    with pytest.raises(DataError, match="unknown executor"):
        run_tasks(parse_count, [], executor="dask")


def test_fusion_and_detectors_go_through_the_executor_and_a_failed_fusion_is_named(llvip, tmp_path, stubs,
                                                                                    monkeypatch):
    from mmdrfuse.pipeline import run as run_module

    seen = []

    def recording(function, tasks, *, executor, address, **options):
        seen.append((executor, address, [task["body"].__name__ for task in tasks]))
        return run_tasks(function, tasks)

    monkeypatch.setattr(run_module, "run_tasks", recording)
    run_pipeline(config(llvip), tmp_path / "run", progress=False, log=lambda *a: None, executor="ray", address="auto")
    assert seen == [("ray", "auto", ["fuse_method", "fuse_method"]), ("ray", "auto", ["detect_method", "detect_method"])]

    # One method's fusion fails: the other is fused and kept, the failure named; the re-run fuses only it.
    real = stages.fuse_method

    def failing(folder, *, name, **arguments):
        if name == "max":
            raise DataError("cannot decode image: max/010001.jpg")
        return real(folder, name=name, **arguments)

    monkeypatch.setattr(stages, "fuse_method", failing)
    seen.clear()
    with pytest.raises(TasksFailed, match=r"1 of 2 fusion\(s\) failed \(max: DataError: cannot decode"):
        run_pipeline(config(llvip), tmp_path / "fresh", progress=False, log=lambda *a: None)
    monkeypatch.setattr(stages, "fuse_method", real)
    seen.clear()
    run_pipeline(config(llvip), tmp_path / "fresh", progress=False, log=lambda *a: None)
    assert seen[0][2] == ["fuse_method"]  # infrared was kept


def test_jobs_reach_the_detector_runs_and_replace_their_bars_by_one(llvip, tmp_path, stubs, monkeypatch):
    from mmdrfuse.pipeline import run as run_module

    seen = []

    def recording(function, tasks, *, executor, address, jobs=1, progress=None):
        seen.append((jobs, progress, [(task["body"].__name__, task["arguments"].get("progress")) for task in tasks]))
        return run_tasks(function, tasks)  # in this process: the stubs are patched here only

    monkeypatch.setattr(run_module, "run_tasks", recording)
    run_pipeline({**config(llvip), "jobs": 2}, tmp_path / "run", progress=True, log=lambda *a: None)
    fusions, detectors = seen
    assert fusions[:2] == (1, None)  # fusions are quick: in this process
    assert detectors == (2, "detectors", [("detect_method", False)] * 2)  # one bar, no per-run bars side by side


def test_builtin_networks_use_the_shipped_weights_when_none_are_given(llvip, tmp_path, stubs, capsys, monkeypatch,
                                                                      random_weights):
    from mmdrfuse.pipeline import detect as detect_module

    shipped = tmp_path / "weights"
    monkeypatch.setattr(detect_module, "default_weights", lambda kind: shipped / f"{kind}.pth")
    argv = ["detect", "--root", str(llvip), "--out", str(tmp_path / "out"), "--builtin", "student", "--weights", "none",
            "--train", "4", "--val", "2", "--epochs", "1", "--imgsz", "64", "--quiet"]
    assert main(argv) == 2  # nothing shipped: one line saying what to pass
    assert "needs --student-weights PATH: the package ships no student weights yet" in capsys.readouterr().err
    shipped.mkdir()
    random_weights("student", path=shipped / "student.pth")
    assert main(argv) == 0
    assert stubs["trained"] == [("student", 0)]
    fused = next((tmp_path / "out").glob("fuse-student-*"))
    assert len(list(fused.rglob("*.png"))) == 6  # 4 train + 2 val ids fused with the shipped student
