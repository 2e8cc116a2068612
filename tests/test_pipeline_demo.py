"""End to end: ``mmdrfuse demo --quick`` runs every stage at toy scale and writes the report;
a second run finds every stage done. Also: the shipped configs are valid pipeline configs."""
import csv
import json
import statistics
from pathlib import Path

import pytest

from mmdrfuse.cli import main
from mmdrfuse.config import defaults
from mmdrfuse.pipeline.config import merge, training_seeds
from mmdrfuse.pipeline.demo import demo_config
from mmdrfuse.pipeline.run import STAGES, check_config, load_config, run_pipeline

REPO = Path(__file__).resolve().parents[1]
# Per method in results.json: summarise's means over seeds, spread, interval, COCO fields and miss rate.
METRICS = {"map50_95", "map50", "precision", "recall", "map50_95_coco", "map50_coco", "lamr", "train_seconds",
           "map50_95_std", "map50_95_boot", "map50_95_ci", "coco", "seeds", "per_seed", "protocol", "fusion_ms_per_image"}
COCO = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"}


def test_shipped_configs_are_valid():
    paper = load_config(REPO / "configs" / "llvip-paper.yaml")
    assert paper["detect"] == {"model": "yolov5s.yaml", "weights": "yolov5su.pt", "epochs": 3, "batch": 16,
                               "optimizer": "SGD", "imgsz": 640, "seed": 0, "seeds": None, "close_mosaic": 10, "warmup_epochs": 3.0,
                               "mosaic": 1.0, "amp": False, "bootstrap": 1000}
    assert paper["prepare"]["subset"] == {"train": 2000, "val": 250, "seed": 0}
    for kind in ("teacher", "student"):  # every key is an option of mmdrfuse train <kind>
        assert set(paper[kind]) <= set(defaults(f"train_{kind}"))
    assert paper["fuse"]["scaling"] == defaults("fuse")["scaling"]
    # configs/demo.yaml is the demo section of default.yaml, written out for users to copy.
    assert load_config(REPO / "configs" / "demo.yaml") == check_config(demo_config())


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--quiet", "--out", str(out)]) == 0
    report = out / "report"
    results = json.loads((report / "results.json").read_text())
    quick = demo_config(quick=True)
    methods, seeds = quick["fuse"]["methods"], training_seeds(quick["detect"])
    assert len(seeds) == 2  # --quick exercises the seeds and the bootstrap
    assert list(results["methods"]) == methods
    for name, values in results["methods"].items():
        assert set(values) == METRICS, name
        assert set(values["coco"]) == COCO
        assert values["seeds"] == seeds and [s["seed"] for s in values["per_seed"]] == seeds
        assert 0 <= values["map50_95"] <= values["map50"] <= 1
        maps = [s["map50_95"] for s in values["per_seed"]]
        assert values["map50_95_std"] == pytest.approx(statistics.stdev(maps), abs=1e-12)
        low, high = values["map50_95_ci"]
        assert 0 <= low <= values["map50_95_boot"] <= high <= 1
        assert values["map50_95_boot"] == pytest.approx(values["coco"]["AP"], abs=1e-6)  # both: mean of the seeds' AP
        assert values["lamr"] is None or 0 <= values["lamr"] <= 1
        assert (values["fusion_ms_per_image"] is None) == (name in ("infrared", "visible"))
    assert results["seeds"] == seeds and results["protocol"]["seeds"] == seeds
    assert results["bootstrap"]["resamples"] == check_config(quick)["detect"]["bootstrap"]
    assert results["comparisons"] and all(set(c) >= {"a", "b", "diff", "ci", "significant"} for c in results["comparisons"])
    assert len(results["sentences"]) == len(results["comparisons"])  # two seeds: no one-seed caveat
    assert results["protocol"]["epochs"] == quick["detect"]["epochs"]
    with open(report / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["method"] for row in rows] == methods and all(row["map50_95_ci_low"] for row in rows)
    text = (report / "report.md").read_text()
    assert all(f"| {m} |" in text for m in methods) and results["sentences"][0] in text
    for figure in ("map_vs_time.png", "examples.png"):
        assert (report / figure).stat().st_size > 1000
    done = {p.name.split("-")[0] for p in out.iterdir() if (p / "DONE").is_file()}
    assert done == set(STAGES)  # every stage ran (the teacher too: the student distils it)
    detectors = [p.name.rsplit("-", 1)[0] for p in out.iterdir() if p.name.startswith("detect-")]
    assert sorted(detectors) == sorted(f"detect-{m}-seed{s}" for m in methods for s in seeds)
    capsys.readouterr()

    # Everything is cached: a second run runs no stage.
    assert main(["demo", "--quick", "--quiet", "--out", str(out)]) == 0
    assert "all cached" in capsys.readouterr().out
    # Another number of bootstrap resamples is a report setting: only the report runs again.
    changed = merge(quick, {"detect": {"bootstrap": check_config(quick)["detect"]["bootstrap"] + 1}})
    assert run_pipeline(changed, out, progress=False, log=lambda *a: None)["ran"] == ["report"]
