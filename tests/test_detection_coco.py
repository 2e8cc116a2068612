"""pycocotools cross-check on hand-made cases whose AP is worked out by hand."""
import pytest

from mmdrfuse.detection import coco_eval
from mmdrfuse.detection.matching import match_coco

BOXES = [[10, 10, 50, 90], [100, 20, 140, 100]]


def ground_truth():
    return coco_eval.build_ground_truth(
        [{"id": 1, "file_name": "a", "width": 200, "height": 120, "boxes": BOXES, "labels": [0, 0]}], ["person"]
    )


def test_perfect_predictions_score_one():
    records = coco_eval.detection_records(1, BOXES, [0.9, 0.8], [0, 0])
    result = coco_eval.evaluate(ground_truth(), records)
    assert set(result) == set(coco_eval.STATS)
    # Both boxes are 40x80 = 3200 px: medium (32^2..96^2); no small or large box -> None (COCO's -1).
    assert (result["AP"], result["AP50"], result["AP75"], result["APm"], result["AR100"]) == pytest.approx((1, 1, 1, 1, 1))
    assert result["APs"] is None and result["APl"] is None
    assert result["AR1"] == pytest.approx(0.5)  # one detection per image finds one of two


def test_evaluation_leaves_the_records_as_they_were():
    records = coco_eval.detection_records(1, BOXES, [0.9, 0.8], [0, 0])
    before = [dict(r) for r in records]
    coco_eval.evaluate(ground_truth(), records)
    assert records == before  # pycocotools' loadRes would add area, id, iscrowd and a segmentation


def test_one_of_two_found_is_51_of_101():
    # Recall 0.5 at precision 1: the 101-point interpolation counts recalls 0, .01, ..., .50.
    records = coco_eval.detection_records(1, BOXES[:1], [0.9], [0])
    result = coco_eval.evaluate(ground_truth(), records)
    assert result["AP"] == pytest.approx(51 / 101)
    assert result["AP50"] == pytest.approx(51 / 101)


def test_false_positive_ranked_first_gives_two_thirds():
    # Ranked: FP (0.95), TP (0.9), TP (0.8) -> precision 0, 1/2, 2/3 at recall 0, .5, 1;
    # interpolated precision is 2/3 at every recall point.
    records = coco_eval.detection_records(1, [[150, 0, 190, 10]] + BOXES, [0.95, 0.9, 0.8], [0, 0, 0])
    assert coco_eval.evaluate(ground_truth(), records)["AP"] == pytest.approx(2 / 3)


def test_loose_box_counts_only_at_low_iou():
    # A box shifted by 8 px in x on a 40x80 box: IoU = 32*80 / (2*40*80 - 32*80) = 2/3.
    shifted = [[18, 10, 58, 90], BOXES[1]]
    result = coco_eval.evaluate(ground_truth(), coco_eval.detection_records(1, shifted, [0.8, 0.9], [0, 0]))
    assert result["AP50"] == pytest.approx(1.0)
    # Thresholds .50 to .65 see two hits (AP 1); .70 to .95 only the exact box, ranked first (AP 51/101).
    assert result["AP"] == pytest.approx((4 + 6 * 51 / 101) / 10)


def test_no_detection_is_zero_and_boxes_are_converted_to_xywh():
    assert set(coco_eval.evaluate(ground_truth(), []).values()) == {0.0}
    assert ground_truth()["annotations"][0]["bbox"] == [10.0, 10.0, 40.0, 80.0]
    with pytest.raises(ValueError):
        coco_eval.detection_records(1, BOXES, [0.9], [0, 0])


def test_only_the_best_100_detections_of_an_image_count():
    # 100 false positives outrank the true box: it is the 101st and cut, AP 0. With 99 it is ranked
    # 100th: precision 1/100 at recall .5 (two boxes, one found), as the matching module counts.
    def records(n_false):
        false = [[150, i, 160, i + 1] for i in range(n_false)]
        return coco_eval.detection_records(1, false + BOXES[:1], [0.9 - i * 1e-3 for i in range(n_false)] + [0.5],
                                           [0] * (n_false + 1))
    assert coco_eval.evaluate(ground_truth(), records(100))["AP"] == 0.0
    assert coco_eval.evaluate(ground_truth(), records(99))["AP"] == pytest.approx(51 / 101 / 100)
    assert match_coco(ground_truth(), records(100))["a", 1].tp.sum() == 0
    assert match_coco(ground_truth(), records(99))["a", 1].tp[:, 0].tolist() == [False] * 99 + [True]
