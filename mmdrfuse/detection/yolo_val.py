"""ultralytics' validator, run once on a trained detector, with its own predictions kept.

``model.val`` scores the boxes it predicts and then drops them (only its ``save_json`` keeps them,
and that installs faster-coco-eval at run time). A subclass of ``DetectionValidator`` records,
per image, the boxes after its NMS and the labels it scored them against, both scaled back to the
original image as its ``pred_to_json`` does. pycocotools, the bootstrap and the miss rate then
see exactly the predictions behind ultralytics' mAP: same letterboxing (its rectangular val
batches), same thresholds (conf 0.001, NMS IoU 0.7), same ``max_det`` (COCO's 100). One
difference stays: ultralytics matches the boxes in the letterboxed frame before clipping them to
the image, the saved boxes are clipped, so a box across the border can count differently (on a
toy run 2 boxes of 980, 0.004 of mAP@.5:.95).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from mmdrfuse.detection import coco_eval
from mmdrfuse.detection.matching import MAX_DETECTIONS


def _capturing_validator(sink: List[Dict]):
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils import ops

    class CapturingValidator(DetectionValidator):
        def update_metrics(self, preds, batch):
            super().update_metrics(preds, batch)
            for index, pred in enumerate(preds):
                prepared = self._prepare_batch(index, batch)
                scaled = self.scale_preds(pred, prepared)["bboxes"]
                truths = prepared["bboxes"]
                if len(truths):
                    truths = ops.scale_boxes(prepared["imgsz"], truths.clone(), prepared["ori_shape"],
                                             ratio_pad=prepared["ratio_pad"])
                height, width = (int(v) for v in prepared["ori_shape"])
                sink.append({
                    "file_name": Path(prepared["im_file"]).stem, "width": width, "height": height,
                    "boxes": truths.cpu().numpy().reshape(-1, 4).tolist(),
                    "labels": prepared["cls"].cpu().numpy().astype(int).reshape(-1).tolist(),
                    "pred_boxes": scaled.cpu().numpy(), "pred_scores": pred["conf"].cpu().numpy(),
                    "pred_classes": pred["cls"].cpu().numpy(),
                    # its own true-positive flags (N, 10), matched in the letterboxed frame before
                    # the boxes are clipped to the image: kept to check the capture, not saved
                    "validator_tp": self._process_batch(pred, prepared)["tp"],
                })

    return CapturingValidator


def validate(weights: Path, data_yaml: Path, class_names: List[str], out_dir: Path, *, imgsz: int, batch: int,
             device: str, workers: int = 0) -> Dict:
    """Run ultralytics' validator of ``weights`` on the ``val`` split of ``data_yaml``.

    Returns ``{"metrics": {"map50_95", "map50", "precision", "recall"}`` (ultralytics' own),
    ``"ground_truth"``: COCO dict of the boxes it scored against (image ``file_name`` = file stem,
    ids 1.. in stem order), ``"predictions"``: COCO result records of its predictions (in its order,
    best first per image), ``"validator_tp"``: ``{image id: its own (N, 10) true-positive flags}``}``.
    Call ``prepare_ultralytics`` first.
    """
    from ultralytics import YOLO

    sink: List[Dict] = []
    metrics = YOLO(str(weights)).val(
        validator=_capturing_validator(sink), data=str(data_yaml), split="val", imgsz=imgsz, batch=batch,
        device=device, workers=workers, conf=0.001, iou=0.7, max_det=MAX_DETECTIONS, plots=False,
        save_json=False, verbose=False, project=str(Path(out_dir).resolve()), name="val", exist_ok=True,
    )
    images = sorted(sink, key=lambda entry: entry["file_name"])
    if len({entry["file_name"] for entry in images}) != len(images):
        raise ValueError("two validation images share a file stem; COCO ids are by stem")
    predictions: List[Dict] = []
    for image_id, entry in enumerate(images, start=1):
        entry["id"] = image_id
        predictions += coco_eval.detection_records(image_id, entry["pred_boxes"], entry["pred_scores"],
                                                   entry["pred_classes"])
    values = metrics.results_dict
    return {
        "metrics": {
            "map50_95": float(values["metrics/mAP50-95(B)"]), "map50": float(values["metrics/mAP50(B)"]),
            "precision": float(values["metrics/precision(B)"]), "recall": float(values["metrics/recall(B)"]),
        },
        "ground_truth": coco_eval.build_ground_truth(images, class_names),
        "predictions": predictions,
        "validator_tp": {entry["id"]: entry["validator_tp"] for entry in images},
    }
