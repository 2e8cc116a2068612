"""COCO's per-image matching of detections to ground truth, kept per image so that later
statistics (bootstrap intervals, the miss rate) re-accumulate without re-running pycocotools.

What ``pycocotools.cocoeval.COCOeval.evaluateImg`` does for the area range "all" and no crowd
boxes, per image and category: the detections are ranked by score (a stable sort, so ties keep
their input order) and cut to the ``max_dets`` best; IoU is
:math:`|d \\cap g| / (|d| + |g| - |d \\cap g|)` on ``[x, y, w, h]`` boxes; at each threshold
:math:`t` every detection in rank order takes, among the ground-truth boxes still free, the one
of largest IoU provided that IoU :math:`\\ge \\min(t, 1 - 10^{-10})` (of equal IoUs the later
box), and is a true positive if it found one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

# pycocotools' Params.iouThrs and recThrs, computed the same way so the floats are the same.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETECTIONS = 100  # COCO's maxDets for AP and AR100; ultralytics' validator is run with the same max_det

Key = Tuple[str, int]  # (image file_name, category id)


@dataclass(frozen=True)
class ImageMatches:
    """One image and one category: ``scores`` (D,) in rank order, ``tp`` (D, T) bool per IoU
    threshold, ``n_gt`` the number of ground-truth boxes."""

    scores: np.ndarray
    tp: np.ndarray
    n_gt: int


def box_iou_xywh(detections: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """IoU (D, G) of ``[x, y, w, h]`` boxes (D, 4) and (G, 4), as pycocotools' ``iou`` for boxes."""
    d = np.asarray(detections, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(truths, dtype=np.float64).reshape(-1, 4)
    width = np.minimum(d[:, None, 0] + d[:, None, 2], g[None, :, 0] + g[None, :, 2]) - np.maximum(d[:, None, 0], g[None, :, 0])
    height = np.minimum(d[:, None, 1] + d[:, None, 3], g[None, :, 1] + g[None, :, 3]) - np.maximum(d[:, None, 1], g[None, :, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    union = (d[:, 2] * d[:, 3])[:, None] + (g[:, 2] * g[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_image(
    truths: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
    max_dets: int = MAX_DETECTIONS,
) -> ImageMatches:
    """COCO matching of one image's detections (``boxes`` (D, 4) xywh, ``scores`` (D,)) to
    ``truths`` (G, 4) xywh, one category (see the module docstring)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    truths = np.asarray(truths, dtype=np.float64).reshape(-1, 4)
    if len(boxes) != len(scores):
        raise ValueError(f"boxes and scores disagree in length: {len(boxes)} and {len(scores)}")
    order = np.argsort(-scores, kind="mergesort")[:max_dets]
    boxes, scores = boxes[order], scores[order]
    tp = np.zeros((len(boxes), len(iou_thresholds)), dtype=bool)
    if len(truths) and len(boxes):
        ious = box_iou_xywh(boxes, truths)
        limits = np.minimum(np.asarray(iou_thresholds, dtype=np.float64), 1 - 1e-10)[:, None]
        taken = np.zeros((len(iou_thresholds), len(truths)), dtype=bool)  # per threshold, per truth
        rows = np.arange(len(iou_thresholds))
        last = len(truths) - 1
        # rank order, every threshold at once; a box that overlaps no truth enough misses at every
        # threshold and takes nothing, so only the others are walked
        for d in np.flatnonzero((ious >= limits.min()).any(axis=1)):
            free = np.where(taken, -1.0, ious[d][None, :])
            best = last - np.argmax(free[:, ::-1], axis=1)  # of equal IoUs the later box, as pycocotools
            hit = free[rows, best] >= limits[:, 0]
            taken[rows[hit], best[hit]] = True
            tp[d] = hit
    return ImageMatches(scores=scores, tp=tp, n_gt=len(truths))


def match_coco(
    ground_truth: Dict, detections: Sequence[Dict], *, max_dets: int = MAX_DETECTIONS
) -> Dict[Key, ImageMatches]:
    """``{(file_name, category_id): ImageMatches}`` for every image of a COCO ground-truth dict
    and every category (with or without boxes there), from COCO result records. Keyed by file
    name so that the same image lines up across methods and seeds."""
    names = {image["id"]: image["file_name"] for image in ground_truth["images"]}
    categories = [c["id"] for c in ground_truth["categories"]]
    truths: Dict[Key, List] = {(n, c): [] for n in names.values() for c in categories}
    found: Dict[Key, List] = {(n, c): [] for n in names.values() for c in categories}
    for annotation in ground_truth["annotations"]:
        if annotation.get("iscrowd", 0):
            raise ValueError("crowd annotations are not supported")
        truths[names[annotation["image_id"]], annotation["category_id"]].append(annotation["bbox"])
    for record in detections:
        key = (names[record["image_id"]], record["category_id"])
        if key not in found:
            raise ValueError(f"detection of unknown category {record['category_id']}")
        found[key].append(record)
    return {
        key: match_image(
            np.asarray(truths[key]), np.asarray([r["bbox"] for r in found[key]]),
            np.asarray([r["score"] for r in found[key]]), max_dets=max_dets,
        )
        for key in truths
    }
