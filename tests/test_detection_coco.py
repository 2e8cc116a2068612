"""pycocotools cross-check on hand-made cases whose AP is worked out by hand."""
import pytest

from mmdrfuse.detection import coco_eval

BOXES = [[10, 10, 50, 90], [100, 20, 140, 100]]


def ground_truth():
    return coco_eval.build_ground_truth(
        [{"id": 1, "file_name": "a", "width": 200, "height": 120, "boxes": BOXES, "labels": [0, 0]}], ["person"]
    )


def test_perfect_predictions_score_one():
    records = coco_eval.detection_records(1, BOXES, [0.9, 0.8], [0, 0])
    assert coco_eval.evaluate(ground_truth(), records) == {"map50_95": pytest.approx(1.0), "map50": pytest.approx(1.0)}


def test_one_of_two_found_is_51_of_101():
    # Recall 0.5 at precision 1: the 101-point interpolation counts recalls 0, .01, ..., .50.
    records = coco_eval.detection_records(1, BOXES[:1], [0.9], [0])
    result = coco_eval.evaluate(ground_truth(), records)
    assert result["map50_95"] == pytest.approx(51 / 101)
    assert result["map50"] == pytest.approx(51 / 101)


def test_false_positive_ranked_first_gives_two_thirds():
    # Ranked: FP (0.95), TP (0.9), TP (0.8) -> precision 0, 1/2, 2/3 at recall 0, .5, 1;
    # interpolated precision is 2/3 at every recall point.
    records = coco_eval.detection_records(1, [[150, 0, 190, 10]] + BOXES, [0.95, 0.9, 0.8], [0, 0, 0])
    assert coco_eval.evaluate(ground_truth(), records)["map50_95"] == pytest.approx(2 / 3)


def test_loose_box_counts_only_at_low_iou():
    # A box shifted by 8 px in x on a 40x80 box: IoU = 32*80 / (2*40*80 - 32*80) = 2/3.
    shifted = [[18, 10, 58, 90], BOXES[1]]
    result = coco_eval.evaluate(ground_truth(), coco_eval.detection_records(1, shifted, [0.8, 0.9], [0, 0]))
    assert result["map50"] == pytest.approx(1.0)
    # Thresholds .50 to .65 see two hits (AP 1); .70 to .95 only the exact box, ranked first (AP 51/101).
    assert result["map50_95"] == pytest.approx((4 + 6 * 51 / 101) / 10)


def test_no_detection_is_zero_and_boxes_are_converted_to_xywh():
    assert coco_eval.evaluate(ground_truth(), []) == {"map50_95": 0.0, "map50": 0.0}
    assert ground_truth()["annotations"][0]["bbox"] == [10.0, 10.0, 40.0, 80.0]
    with pytest.raises(ValueError):
        coco_eval.detection_records(1, BOXES, [0.9], [0, 0])
