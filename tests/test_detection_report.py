"""summarise: means over seeds, intervals, comparisons and sentences; the report files it feeds."""
import csv
import json

import numpy as np
import pytest

from mmdrfuse.detection import coco_eval
from mmdrfuse.detection.report import markdown, write_report
from mmdrfuse.detection.summary import comparison_sentences, pairs_to_compare, summarise

PROTOCOL = {"close_mosaic": 10, "mosaic": 1.0, "warmup_epochs": 3.0, "amp": False, "mosaic_epochs": 0,
            "warmup_epochs_used": 2.0, "amp_used": False}


def fake_run(quality: float, seed: int, images: int = 30):
    """One detector result: each true box found with probability ``quality`` (slightly off), plus
    a false positive per image; ultralytics' own mAP stands in as pycocotools' AP."""
    rng = np.random.default_rng(seed)
    truth = np.random.default_rng(99)  # the same validation images for every method and seed
    entries, records = [], []
    for image_id in range(1, images + 1):
        n = int(truth.integers(1, 4))
        xy = truth.uniform(0, 200, (n, 2))
        boxes = np.hstack([xy, xy + truth.uniform(20, 60, (n, 2))])
        entries.append({"id": image_id, "file_name": f"{image_id:03d}", "width": 300, "height": 300,
                        "boxes": boxes.tolist(), "labels": [0] * n})
        found = boxes[rng.random(n) < quality]
        found = found + rng.normal(0, 2, found.shape)
        false = np.array([[250, 250, 290, 290]])
        predicted = np.vstack([found, false])
        records += coco_eval.detection_records(image_id, predicted, rng.uniform(0.2, 1, len(predicted)), [0] * len(predicted))
    gt = coco_eval.build_ground_truth(entries, ["person"])
    coco = coco_eval.evaluate(gt, records)
    return {"map50_95": coco["AP"] + 0.001 * seed, "map50": coco["AP50"], "precision": 0.5, "recall": 0.5,
            "map50_95_coco": coco["AP"], "map50_coco": coco["AP50"], "coco": coco, "lamr": 0.5, "seed": seed,
            "protocol": PROTOCOL, "train_seconds": 10.0, "predictions": records, "ground_truth": gt}


@pytest.fixture(scope="module")
def summary():
    runs = {"infrared": [fake_run(0.5, s) for s in (0, 1)], "visible": [fake_run(0.3, s + 10) for s in (0, 1)],
            "max": [fake_run(0.95, s + 20) for s in (0, 1)], "average": [fake_run(0.5, s) for s in (0, 1)]}
    return runs, summarise(runs, fusion_ms={"max": 0.01, "average": 0.05}, resamples=300)


def test_methods_carry_means_spread_intervals_and_coco_fields(summary):
    runs, result = summary
    infrared = result["methods"]["infrared"]
    assert infrared["map50_95"] == pytest.approx(np.mean([r["map50_95"] for r in runs["infrared"]]))
    assert infrared["map50_95_std"] == pytest.approx(np.std([r["map50_95"] for r in runs["infrared"]], ddof=1))
    assert infrared["seeds"] == [0, 1] and infrared["lamr"] == 0.5 and infrared["protocol"] == PROTOCOL
    # the bootstrap's point is the mean over seeds of pycocotools' AP, inside its interval
    assert infrared["map50_95_boot"] == pytest.approx(np.mean([r["coco"]["AP"] for r in runs["infrared"]]), abs=1e-9)
    low, high = infrared["map50_95_ci"]
    assert low < infrared["map50_95_boot"] < high
    assert set(infrared["coco"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"}
    assert result["methods"]["max"]["fusion_ms_per_image"] == 0.01 and infrared["fusion_ms_per_image"] is None


def test_comparisons_and_sentences_follow_the_intervals(summary):
    _, result = summary
    pairs = {(c["a"], c["b"]): c for c in result["comparisons"]}
    # max is the best method and the best single modality is infrared: max vs infrared, average vs
    # infrared and vs max; no self-comparison.
    assert set(pairs) == {("max", "infrared"), ("average", "infrared"), ("average", "max")}
    assert pairs["max", "infrared"]["significant"] and pairs["max", "infrared"]["ci"][0] > 0
    # average has the very same predictions as infrared: the paired difference is exactly 0
    assert pairs["average", "infrared"]["ci"] == [0.0, 0.0] and not pairs["average", "infrared"]["significant"]
    text = " ".join(result["sentences"])
    assert "max beats infrared (the best single modality) by" in text
    assert "average and infrared (the best single modality) are not distinguishable" in text
    assert "average is below max (the best method) by" in text
    assert "One training seed" not in text


def test_one_seed_says_so_and_significance_wording():
    sentences = comparison_sentences([{"a": "x", "b": "infrared", "diff": -0.04, "ci": [-0.07, -0.01],
                                       "significant": True, "b_is": "the best single modality"}], n_seeds=1)
    assert sentences[0].startswith("x is below infrared (the best single modality) by 0.040 [0.010, 0.070] mAP@.5:.95")
    assert "cannot separate small differences" in sentences[1]


def test_pairs_to_compare_without_single_modalities():
    assert pairs_to_compare({"a": 0.3, "b": 0.5}) == [("a", "b", "the best method")]
    # the best method is the best single modality: one comparison, not two
    assert pairs_to_compare({"infrared": 0.6, "visible": 0.2, "max": 0.5}) == [("max", "infrared", "the best single modality")]


def test_report_files_carry_the_same_figures(summary, tmp_path):
    _, result = summary
    results = {**result, "protocol": {"model": "yolov5s.yaml", "epochs": 3, "batch": 16, "seed": 0, "data": "d"}}
    paths = write_report(tmp_path, results)
    saved = json.loads(paths["json"].read_text())
    assert saved["comparisons"] == json.loads(json.dumps(result["comparisons"]))
    with open(paths["csv"]) as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle)}
    assert float(rows["max"]["map50_95_ci_low"]) == pytest.approx(result["methods"]["max"]["map50_95_ci"][0])
    assert rows["max"]["seeds"] == "20 21" and rows["infrared"]["fusion_ms_per_image"] == ""
    text = paths["markdown"].read_text()
    assert "YOLOv5u" in text and "anchor-free" in text and "not the original anchor-based YOLOv5" in text
    assert "mosaic (p 1) in 0 of 3 epochs" in text and "warm-up 2 epochs" in text
    low, high = result["methods"]["max"]["map50_95_ci"]
    assert f"[{low:.3f}, {high:.3f}]" in text and "max beats infrared (the best single modality) by" in text
    assert paths["figure"].stat().st_size > 1000


def test_markdown_of_a_results_dict_without_the_summary_keeps_the_old_table():
    methods = {"infrared": {"map50_95": 0.3}, "max": {"map50_95": 0.5, "fusion_ms_per_image": 0.1}}
    text = markdown({"methods": methods, "protocol": {"model": "m"}}, [])
    assert "Every fused method beats both single modalities" in text and "| max | 0.500 |" in text


def test_a_missing_or_broken_saved_file_is_one_clear_error(tmp_path):
    from mmdrfuse.errors import DataError

    run = fake_run(0.5, 0, images=3)
    broken = tmp_path / "predictions.json"
    broken.write_text("{not json")
    for path in (broken, tmp_path / "missing.json"):
        with pytest.raises(DataError, match=str(path.name)):
            summarise({"max": [{**run, "predictions": str(path)}]}, resamples=10)
