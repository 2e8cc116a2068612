"""LLVIP's log-average miss rate against hand-computed cases."""
import numpy as np
import pytest

from mmdrfuse.detection import coco_eval
from mmdrfuse.detection.matching import match_coco
from mmdrfuse.detection.miss_rate import FPPI_POINTS, lamr_from_matches, log_average_miss_rate


def test_reference_points_are_calteches_nine():
    np.testing.assert_allclose(FPPI_POINTS, [10 ** (-2 + j / 4) for j in range(9)])


def test_hand_computed_curve():
    # 2 images, 3 boxes. Ranked: TP .9, FP .8, TP .7, FP .6, FP .5. FPPI / miss rate after each:
    # (0, 2/3), (.5, 2/3), (.5, 1/3), (1, 1/3), (1.5, 1/3). References .01 ... .316 (7 points) see
    # the first point (2/3); .562 sees (.5, 1/3); 1.0 sees (1, 1/3).
    scores = [0.6, 0.9, 0.5, 0.8, 0.7]  # unsorted on purpose
    hits = [False, True, False, False, True]
    expected = np.exp((7 * np.log(2 / 3) + 2 * np.log(1 / 3)) / 9)
    assert log_average_miss_rate(scores, hits, n_gt=3, n_images=2) == pytest.approx(expected, rel=1e-12)


def test_edge_cases():
    assert log_average_miss_rate([], [], n_gt=4, n_images=3) == 1.0  # nothing found: miss rate 1
    assert np.isnan(log_average_miss_rate([0.5], [False], n_gt=0, n_images=3))
    # every box found before any false positive: miss rate 0, floored at 1e-10 as dbEval
    assert log_average_miss_rate([0.9, 0.8, 0.1], [True, True, False], n_gt=2, n_images=1) == pytest.approx(1e-10)
    # a false positive ranked first on 1 image is FPPI 1: the references below 1 see miss rate 1;
    # 1.0 sees the last point at FPPI <= 1, after the true positive: miss rate 0 (floored)
    assert log_average_miss_rate([0.9, 0.8], [False, True], n_gt=1, n_images=1) == pytest.approx(1e-10 ** (1 / 9))


def test_from_coco_matching_at_iou_half():
    # Image a: box found at IoU 2/3 (a hit at .5), image b: one false positive, one missed box.
    gt = coco_eval.build_ground_truth(
        [{"id": 1, "file_name": "a", "width": 200, "height": 120, "boxes": [[10, 10, 50, 90]], "labels": [0]},
         {"id": 2, "file_name": "b", "width": 200, "height": 120, "boxes": [[100, 20, 140, 100]], "labels": [0]}],
        ["person"])
    records = coco_eval.detection_records(1, [[18, 10, 58, 90]], [0.9], [0]) + \
        coco_eval.detection_records(2, [[0, 0, 10, 10]], [0.95], [0])
    # Ranked: FP (.95) -> FPPI .5, miss 1; TP (.9) -> FPPI .5, miss .5. References below .5: miss 1
    # (before any detection); .562 and 1: miss .5.
    expected = np.exp(2 * np.log(0.5) / 9)
    assert lamr_from_matches(match_coco(gt, records)) == pytest.approx(expected, rel=1e-12)
