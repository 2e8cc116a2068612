"""The log-average miss rate (LAMR), the pedestrian-detection metric LLVIP reports, as the
Caltech evaluation computes it (Dollar et al.; Piotr's toolbox ``bbGt('compRoc')`` and
``dbEval``, which LLVIP's and the KAIST/CVC evaluation scripts reuse).

The detections of all images ranked by score, after the :math:`k` best:
false positives per image :math:`f_k = FP_k / N_{images}` and miss rate
:math:`m_k = 1 - TP_k / N_{gt}`, with :math:`(f_0, m_0) = (-\\infty, 1)` before the first. At each
of the 9 reference points :math:`x_j = 10^{-2 + j/4}` (:math:`j = 0..8`, 0.01 to 1 FPPI) the miss
rate is :math:`m` of the last :math:`k` with :math:`f_k \\le x_j`, and

.. math::  LAMR = \\exp\\Big(\\frac{1}{9} \\sum_j \\log \\max(10^{-10}, m(x_j))\\Big).

Lower is better. Matching: a detection is a true positive at IoU >= 0.5 (COCO's matching at the
first threshold, per image; Caltech's own matching also ignores boxes under 50 px high and
"ignore" regions, which LLVIP's labels do not have).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from mmdrfuse.detection.matching import ImageMatches, Key

FPPI_POINTS = 10.0 ** np.arange(-2.0, 0.0001, 0.25)  # MATLAB 10.^(-2:.25:0)


def log_average_miss_rate(scores: np.ndarray, true_positive: np.ndarray, n_gt: int, n_images: int) -> float:
    """LAMR of detections pooled over ``n_images`` images: ``scores`` (D,), ``true_positive`` (D,)
    bool at IoU 0.5, ``n_gt`` ground-truth boxes in all. NaN without ground truth; 1 without detections."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    true_positive = np.asarray(true_positive, dtype=bool).reshape(-1)
    if len(scores) != len(true_positive):
        raise ValueError(f"scores and true_positive disagree in length: {len(scores)} and {len(true_positive)}")
    if n_gt <= 0 or n_images <= 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")  # MATLAB's sort(...,'descend') is stable too
    hits = true_positive[order]
    fppi = np.concatenate([[-np.inf], np.cumsum(~hits) / n_images])
    miss = np.concatenate([[1.0], 1.0 - np.cumsum(hits) / n_gt])
    last = np.searchsorted(fppi, FPPI_POINTS, side="right") - 1
    return float(np.exp(np.mean(np.log(np.maximum(1e-10, miss[last])))))


def lamr_from_matches(matches: Dict[Key, ImageMatches], category: Optional[int] = None) -> float:
    """LAMR of one seed's ``match_coco`` output for ``category`` (None: the only category there is)."""
    categories = sorted({c for _, c in matches})
    if category is None:
        if len(categories) != 1:
            raise ValueError(f"name the category: the matches have {len(categories)}")
        (category,) = categories
    chosen = [m for (_, c), m in matches.items() if c == category]
    n_images = len({name for name, _ in matches})
    scores = np.concatenate([m.scores for m in chosen]) if chosen else np.zeros(0)
    hits = np.concatenate([m.tp[:, 0] for m in chosen]) if chosen else np.zeros(0, bool)
    return log_average_miss_rate(scores, hits, sum(m.n_gt for m in chosen), n_images)
