"""End to end: ``mmdrfuse demo --quick`` runs every stage at toy scale and writes the report;
a second run finds every stage done. Also: the shipped configs are valid pipeline configs."""
import csv
import json
from pathlib import Path

import pytest

from mmdrfuse.cli import main
from mmdrfuse.config import defaults
from mmdrfuse.pipeline.demo import demo_config
from mmdrfuse.pipeline.run import STAGES, check_config, load_config

REPO = Path(__file__).resolve().parents[1]
METRICS = {"map50_95", "map50", "precision", "recall", "map50_95_coco", "map50_coco", "fusion_ms_per_image", "train_seconds"}


def test_shipped_configs_are_valid():
    paper = load_config(REPO / "configs" / "llvip-paper.yaml")
    assert paper["detect"] == {"model": "yolov5s.yaml", "weights": "yolov5su.pt", "epochs": 3, "batch": 16,
                               "optimizer": "SGD", "imgsz": 640, "seed": 0, "close_mosaic": 10, "warmup_epochs": 3.0,
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
    methods = demo_config(quick=True)["fuse"]["methods"]
    assert list(results["methods"]) == methods
    for name, values in results["methods"].items():
        assert set(values) == METRICS
        assert 0 <= values["map50_95"] <= values["map50"] <= 1
        assert (values["fusion_ms_per_image"] is None) == (name in ("infrared", "visible"))
    assert results["protocol"]["epochs"] == demo_config(quick=True)["detect"]["epochs"]
    with open(report / "results.csv") as handle:
        assert [row["method"] for row in csv.DictReader(handle)] == methods
    text = (report / "report.md").read_text()
    assert "single modalit" in text and all(f"| {m} |" in text for m in methods)
    for figure in ("map_vs_time.png", "examples.png"):
        assert (report / figure).stat().st_size > 1000
    done = {p.name.split("-")[0] for p in out.iterdir() if (p / "DONE").is_file()}
    assert done == set(STAGES)  # every stage ran (the teacher too: the student distils it)
    capsys.readouterr()

    # Everything is cached: a second run runs no stage.
    assert main(["demo", "--quick", "--quiet", "--out", str(out)]) == 0
    assert "all cached" in capsys.readouterr().out
