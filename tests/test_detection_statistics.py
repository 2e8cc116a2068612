"""The bootstrap's weighted COCO accumulation against pycocotools, and its intervals."""
import numpy as np
import pytest

from mmdrfuse.detection import coco_eval
from mmdrfuse.detection.matching import match_coco
from mmdrfuse.detection.statistics import bootstrap, percentile_interval, resample_weights, seed_table, weighted_map


def toy_set(seed: int, images: int = 12, categories: int = 2):
    """Random boxes with detections near (some on, some off) the truth, scores with ties."""
    rng = np.random.default_rng(seed)
    entries, records = [], []
    for image_id in range(1, images + 1):
        n = int(rng.integers(0, 5))
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(8, 60, (n, 2))
        boxes = np.hstack([xy, xy + wh])
        labels = rng.integers(0, categories, n)
        entries.append({"id": image_id, "file_name": f"im{image_id:02d}", "width": 300, "height": 300,
                        "boxes": boxes.tolist(), "labels": labels.tolist()})
        keep = rng.random(n) < 0.8
        jitter = boxes[keep] + rng.normal(0, 5, (int(keep.sum()), 4))
        false = rng.uniform(0, 200, (int(rng.integers(0, 4)), 2))
        false = np.hstack([false, false + 30])
        predicted = np.vstack([jitter, false])
        scores = np.round(rng.uniform(0, 1, len(predicted)), 1)  # rounded: ties across images
        classes = np.concatenate([labels[keep], rng.integers(0, categories, len(false))])
        predicted[:, 2:] = np.maximum(predicted[:, 2:], predicted[:, :2] + 1)
        records += coco_eval.detection_records(image_id, predicted, scores, classes)
    gt = coco_eval.build_ground_truth(entries, [f"c{i}" for i in range(categories)])
    return gt, records


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_weights_one_is_pycocotools_ap(seed):
    gt, records = toy_set(seed)
    table = seed_table(match_coco(gt, records), [image["file_name"] for image in gt["images"]])
    ours = weighted_map(table, np.ones((1, len(gt["images"]))))[0]
    assert ours == pytest.approx(coco_eval.evaluate(gt, records)["AP"], abs=1e-9)


def test_integer_weights_equal_pycocotools_on_the_duplicated_images():
    gt, records = toy_set(5, images=6, categories=1)
    records = [{**r, "score": r["score"] + 1e-3 * r["image_id"]} for r in records]  # no ties across images
    weights = np.array([2, 0, 1, 3, 1, 0], float)
    copies, copied = [], []
    for image in gt["images"]:
        for copy in range(int(weights[image["id"] - 1])):
            new_id = len(copies) + 1
            boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                     for a in gt["annotations"] if a["image_id"] == image["id"]]
            copies.append({"id": new_id, "file_name": f"{image['file_name']}-{copy}", "width": 300, "height": 300,
                           "boxes": boxes, "labels": [0] * len(boxes)})
            copied += [{**r, "image_id": new_id} for r in records if r["image_id"] == image["id"]]
    expected = coco_eval.evaluate(coco_eval.build_ground_truth(copies, ["c0"]), copied)["AP"]
    table = seed_table(match_coco(gt, records), [image["file_name"] for image in gt["images"]])
    assert weighted_map(table, weights[None])[0] == pytest.approx(expected, abs=1e-9)


def test_known_answer_one_image_holds_the_only_truth():
    # Two images; only "a" has a box, found exactly. A resample that draws "a" has AP 1, one that
    # draws only "b" has no truth (undefined, left out): every defined resample is 1.
    gt = coco_eval.build_ground_truth(
        [{"id": 1, "file_name": "a", "width": 100, "height": 100, "boxes": [[10, 10, 50, 50]], "labels": [0]},
         {"id": 2, "file_name": "b", "width": 100, "height": 100, "boxes": [], "labels": []}], ["person"])
    records = coco_eval.detection_records(1, [[10, 10, 50, 50]], [0.9], [0])
    tables = {"m": [seed_table(match_coco(gt, records), ["a", "b"])]}
    result = bootstrap(tables, resamples=200, seed=0)
    # (1 / (1 + eps) as pycocotools: precision = tp / (tp + fp + np.spacing(1)))
    assert result["methods"]["m"]["map50_95"] == pytest.approx(1.0, abs=1e-12)
    assert result["methods"]["m"]["ci"] == pytest.approx([1.0, 1.0], abs=1e-12)


def test_known_answer_half_found_is_a_binomial_of_the_drawn_images():
    # Four images with one box each; the detector finds the box of "a" and "b" only, no false
    # positives: a resample's AP follows from its recall (drawn found / drawn total) alone.
    entries = [{"id": i + 1, "file_name": n, "width": 100, "height": 100, "boxes": [[10, 10, 50, 50]], "labels": [0]}
               for i, n in enumerate("abcd")]
    gt = coco_eval.build_ground_truth(entries, ["person"])
    records = coco_eval.detection_records(1, [[10, 10, 50, 50]], [0.9], [0]) + \
        coco_eval.detection_records(2, [[10, 10, 50, 50]], [0.8], [0])
    table = seed_table(match_coco(gt, records), list("abcd"))
    weights = resample_weights(4, 500, seed=3)
    recall = (weights[:, 0] + weights[:, 1]) / 4
    # recall points 0, .01, ..., <= recall at precision 1; nothing found (recall 0) is AP 0
    expected = np.where(recall > 0, (np.floor(recall * 100 + 1e-9) + 1) / 101, 0.0)
    np.testing.assert_allclose(weighted_map(table, weights), expected, atol=1e-12)


def test_identical_methods_differ_by_exactly_zero_and_are_not_significant():
    gt, records = toy_set(3)
    images = [image["file_name"] for image in gt["images"]]
    table = seed_table(match_coco(gt, records), images)
    other_gt, other_records = toy_set(4)
    other = seed_table(match_coco(other_gt, other_records), images)
    result = bootstrap({"x": [table, other], "y": [table, other]}, [("x", "y")], resamples=300, seed=1)
    (comparison,) = result["comparisons"]
    assert comparison == {"a": "x", "b": "y", "diff": 0.0, "ci": [0.0, 0.0], "significant": False}
    low, high = result["methods"]["x"]["ci"]
    assert low < result["methods"]["x"]["map50_95"] < high  # a real spread, around the point estimate


def test_a_clearly_better_method_is_significant():
    gt, records = toy_set(7, images=40, categories=1)
    images = [image["file_name"] for image in gt["images"]]
    good = seed_table(match_coco(gt, records), images)
    # The bad method's detections are shifted by a box width: it finds (almost) nothing.
    shifted = [{**r, "bbox": [r["bbox"][0] + 70, *r["bbox"][1:]]} for r in records]
    bad = seed_table(match_coco(gt, shifted), images)
    (comparison,) = bootstrap({"good": [good], "bad": [bad]}, [("good", "bad")], resamples=300)["comparisons"]
    assert comparison["significant"] and comparison["ci"][0] > 0


def test_resample_weights_and_percentiles():
    weights = resample_weights(7, 50, seed=0)
    assert weights.shape == (50, 7) and (weights.sum(1) == 7).all()
    np.testing.assert_array_equal(weights, resample_weights(7, 50, seed=0))
    assert percentile_interval(np.arange(101.0), 0.9) == pytest.approx([5.0, 95.0])
    assert percentile_interval(np.array([np.nan, 2.0, 2.0])) == [2.0, 2.0]


def test_tables_on_different_images_or_no_resample_are_refused():
    gt, records = toy_set(0, images=4)
    images = [image["file_name"] for image in gt["images"]]
    table = seed_table(match_coco(gt, records), images)
    other = seed_table(match_coco(gt, records), images[::-1])
    with pytest.raises(ValueError, match="same validation images"):
        bootstrap({"a": [table], "b": [other]})
    with pytest.raises(ValueError, match="at least one resample"):
        bootstrap({"a": [table]}, resamples=0)
