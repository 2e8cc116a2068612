"""Bootstrap intervals of COCO mAP@.5:.95 over validation images, per method and for the paired
difference of two methods, from the saved per-image matches (no re-inference, no pycocotools).

A resample draws :math:`n` images with replacement; image :math:`i` drawn :math:`w_i` times counts
:math:`w_i` times, with every seed's detections on it. COCO's accumulation on weighted images
(one category, one IoU threshold, one seed): with the detections of all images ranked by score,

.. math::  TP_k = \\sum_{j \\le k} w_{i(j)} \\, tp_j, \\quad FP_k = \\sum_{j \\le k} w_{i(j)} (1 - tp_j),
           \\quad p_k = TP_k / (TP_k + FP_k + \\epsilon), \\quad r_k = TP_k / \\sum_i w_i n_i,

the precision envelope :math:`\\hat p_k = \\max_{k' \\ge k} p_{k'}` read at the 101 recall points
:math:`\\rho` (first :math:`k` with :math:`r_k \\ge \\rho`, 0 past the last) and averaged: AP. mAP
averages AP over the 10 IoU thresholds and the categories with ground truth; a method's mAP
averages its seeds (each seed's detector has its own score scale, so seeds are never ranked
together). With every :math:`w_i = 1` this is pycocotools' AP exactly.

Only true positives can be the first to reach a recall point, and a false positive's precision is
below that of the true positive before it, so the envelope needs :math:`TP_k, FP_k` only at the true
positives. Most detections (at conf 0.001) are true at no threshold: per image :math:`i`, the count
:math:`B_{ie}` of those ranked above each detection :math:`e` that is true at some threshold makes
their share of :math:`FP` one matrix product :math:`W B` for all resamples :math:`W` (R, n); the rest
are cumulative sums over the few detections ever true, per threshold.
Ties in score between images are ranked in image order, as pycocotools does with all weights 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from mmdrfuse.detection.matching import IOU_THRESHOLDS, RECALL_THRESHOLDS, ImageMatches, Key

_EPS = np.spacing(1)  # pycocotools: tp / (fp + tp + np.spacing(1))


@dataclass(frozen=True)
class CategoryTable:
    """One seed and category. The detections that are a true positive at some IoU threshold, in
    rank order: ``owner`` (E,) their image index, ``tp`` (E, T) their flags, ``fp_above`` (n_images, E)
    per image the detections never true ranked above each; ``n_gt`` (n_images,)."""

    owner: np.ndarray
    tp: np.ndarray
    fp_above: np.ndarray
    n_gt: np.ndarray


@dataclass(frozen=True)
class SeedTable:
    """One seed of one method over ``images``: a ``CategoryTable`` per category id."""

    images: Tuple[str, ...]
    categories: Dict[int, CategoryTable]


def seed_table(matches: Dict[Key, ImageMatches], images: Sequence[str]) -> SeedTable:
    """Precompute the per-image counts of one seed's matches (``match_coco``) over ``images``."""
    images = tuple(images)
    index = {name: i for i, name in enumerate(images)}
    missing = {name for name, _ in matches} - set(index)
    if missing:
        raise ValueError(f"matches for images outside the image list: {sorted(missing)[:3]}")
    categories = {}
    for category in sorted({c for _, c in matches}):
        keys = [(name, category) for name in images if (name, category) in matches]
        n_gt = np.zeros(len(images))
        for name, _ in keys:
            n_gt[index[name]] = matches[name, category].n_gt
        # pycocotools concatenates the images in id order and ranks with a stable sort.
        scores = np.concatenate([np.zeros(0)] + [matches[k].scores for k in keys])
        owner = np.concatenate([np.zeros(0, int)] + [np.full(len(matches[k].scores), index[k[0]]) for k in keys])
        tps = np.concatenate([np.zeros((0, len(IOU_THRESHOLDS)), bool)] + [matches[k].tp for k in keys])
        order = np.argsort(-scores, kind="mergesort")
        owner, tps = owner[order], tps[order]
        ever = tps.any(axis=1)
        ever_rank, never_rank = np.flatnonzero(ever), np.flatnonzero(~ever)
        fp_above = np.zeros((len(images), len(ever_rank)))
        for i in np.unique(owner[never_rank]):
            fp_above[i] = np.searchsorted(never_rank[owner[never_rank] == i], ever_rank)
        categories[category] = CategoryTable(owner=owner[ever], tp=tps[ever], fp_above=fp_above, n_gt=n_gt)
    return SeedTable(images=images, categories=categories)


def _interpolated_precision(tp: np.ndarray, fp: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
    """Mean precision at the 101 recall points (R,), from TP/FP (R, K) at the true positives."""
    result = np.zeros(len(tp))
    if tp.shape[1] == 0:
        return result
    precision = tp / (tp + fp + _EPS)
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    recall = tp / n_gt[:, None]
    for row in range(len(tp)):
        positions = np.searchsorted(recall[row], RECALL_THRESHOLDS, side="left")
        inside = positions < tp.shape[1]
        result[row] = envelope[row, positions[inside]].sum() / len(RECALL_THRESHOLDS)
    return result


def weighted_map(table: SeedTable, weights: np.ndarray) -> np.ndarray:
    """mAP@.5:.95 (R,) of one seed for image weights (R, n_images); NaN where no drawn image has a
    ground-truth box (pycocotools: -1, undefined)."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if weights.shape[1] != len(table.images):
        raise ValueError(f"weights have {weights.shape[1]} columns for {len(table.images)} images")
    total, counted = np.zeros(len(weights)), np.zeros(len(weights))
    for category in table.categories.values():
        n_gt = weights @ category.n_gt
        defined = n_gt > 0
        w = weights[defined]
        never_above = w @ category.fp_above  # (R, E): detections never true, ranked above each
        mine = w[:, category.owner]  # (R, E): the weight of each detection's image
        ap = np.zeros(int(defined.sum()))
        for t in range(category.tp.shape[1]):
            hit = category.tp[:, t]
            # at a true positive, the inclusive cumulative sum of the misses is the misses above it
            tp = np.cumsum(mine * hit, axis=1)[:, hit]
            fp = (never_above + np.cumsum(mine * ~hit, axis=1))[:, hit]
            ap += _interpolated_precision(tp, fp, n_gt[defined])
        total[defined] += ap / category.tp.shape[1]
        counted += defined
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counted > 0, total / counted, np.nan)


def resample_weights(n_images: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_images) counts: each row is how often each image is drawn in n draws with
    replacement (``numpy.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_images, size=(resamples, n_images))
    flat = draws + n_images * np.arange(resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n_images).reshape(resamples, n_images).astype(np.float64)


def method_map(tables: Sequence[SeedTable], weights: np.ndarray) -> np.ndarray:
    """A method's mAP (R,): the mean over its seeds' tables."""
    return np.mean([weighted_map(table, weights) for table in tables], axis=0)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> List[float]:
    """The percentile bootstrap interval ``[lo, hi]`` of ``values`` (NaN resamples left out)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return [float("nan"), float("nan")]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap(
    tables: Dict[str, Sequence[SeedTable]],
    pairs: Sequence[Tuple[str, str]] = (),
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Dict:
    """Percentile intervals from one set of image resamples shared by every method.

    ``tables``: ``{method: [SeedTable per seed]}``, all over the same image list. ``pairs``:
    ``(a, b)`` whose difference mAP(a) - mAP(b) is bootstrapped on the same resamples (paired).
    Returns ``{"methods": {name: {"map50_95", "ci"}}, "comparisons": [{"a", "b", "diff", "ci",
    "significant"}]}``; ``significant``: the interval excludes 0.
    """
    if resamples < 1:
        raise ValueError(f"the bootstrap needs at least one resample, got {resamples}")
    images = {table.images for seeds in tables.values() for table in seeds}
    if len(images) != 1:
        raise ValueError("every method and seed must be scored on the same validation images")
    (image_list,) = images
    weights = resample_weights(len(image_list), resamples, seed)
    ones = np.ones((1, len(image_list)))
    point = {name: float(method_map(seeds, ones)[0]) for name, seeds in tables.items()}
    samples = {name: method_map(seeds, weights) for name, seeds in tables.items()}
    methods = {name: {"map50_95": point[name], "ci": percentile_interval(samples[name], level)} for name in tables}
    comparisons = []
    for a, b in pairs:
        low, high = percentile_interval(samples[a] - samples[b], level)
        comparisons.append({"a": a, "b": b, "diff": point[a] - point[b], "ci": [low, high],
                            "significant": bool(low > 0 or high < 0)})
    return {"methods": methods, "comparisons": comparisons}
