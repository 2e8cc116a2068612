"""COCO metrics with pycocotools of the predictions ultralytics' validator made (the check of its mAP).

In the style of torchvision's references/detection (``coco_utils.convert_to_coco_api`` and
``coco_eval.CocoEvaluator``), reduced to boxes only. Boxes come in as pixel
``[x1, y1, x2, y2]``; COCO stores ``[x, y, width, height]``. COCO's AP averages, over the IoU
thresholds .50:.05:.95, the precision interpolated at 101 recall points
(p_interp(r) = max_{r' >= r} p(r')), so one perfect detection of one of two objects scores
AP = 51 / 101 (recalls 0, .01, ..., .50 reached at precision 1).
"""
from __future__ import annotations

import contextlib
import io
import json
from typing import Dict, List, Optional, Sequence

import numpy as np

from mmdrfuse.detection.matching import MAX_DETECTIONS


def _xyxy_to_xywh(box: Sequence[float]) -> List[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def build_ground_truth(images: Sequence[Dict], class_names: Sequence[str]) -> Dict:
    """COCO ground-truth dict from ``[{"id", "file_name", "width", "height", "boxes": [[x1, y1, x2, y2], ...],
    "labels": [class index, ...]}]``; category ids are class index + 1 (COCO reserves 0)."""
    annotations = []
    for image in images:
        boxes = np.asarray(image["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = image.get("labels", [0] * len(boxes))
        for box, label in zip(boxes, labels):
            x, y, w, h = _xyxy_to_xywh(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": int(label) + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    return {
        "images": [{k: image[k] for k in ("id", "file_name", "width", "height")} for image in images],
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(class_names)],
    }


def detection_records(image_id: int, boxes, scores, labels) -> List[Dict]:
    """COCO result records for one image: boxes (N, 4) pixel xyxy, scores (N,), class indices (N,)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores, labels = np.asarray(scores).reshape(-1), np.asarray(labels).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"boxes, scores and labels disagree in length: {len(boxes)}, {len(scores)}, {len(labels)}")
    return [
        {"image_id": image_id, "category_id": int(label) + 1, "bbox": _xyxy_to_xywh(box), "score": float(score)}
        for box, score, label in zip(boxes, scores, labels)
    ]


STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def evaluate(ground_truth: Dict, detections: Sequence[Dict]) -> Dict[str, Optional[float]]:
    """pycocotools bbox evaluation -> its whole ``stats`` vector by name (``STATS``): AP@[.5:.95],
    AP@.5, AP@.75, AP of small (< 32^2 px), medium and large boxes, AR at 1, 10 and 100 detections
    per image, AR by size. At most ``MAX_DETECTIONS`` (100, COCO's) detections per image count:
    pycocotools hard-wires 100 for stats[0], so the validator is run with ``max_det=100`` too.
    A size bucket without ground truth is None (COCO's -1).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not ground_truth["annotations"]:
        raise ValueError("COCO evaluation needs at least one ground-truth box")
    if not detections:  # loadRes refuses an empty list; no detection is AP 0 by definition
        return {name: 0.0 for name in STATS}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables unconditionally
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(ground_truth))
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(record) for record in detections])  # loadRes adds keys to each record
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.maxDets = [1, 10, MAX_DETECTIONS]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: (None if value < 0 else float(value)) for name, value in zip(STATS, evaluator.stats)}
