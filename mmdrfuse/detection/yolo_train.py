"""Train one ultralytics YOLO detector on one method's dataset, validate it, and save its
validation predictions as COCO json for the pycocotools cross-check."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from mmdrfuse.data.io import image_size, list_images
from mmdrfuse.detection import coco_eval
from mmdrfuse.detection.yolo_offline import prepare_ultralytics
from mmdrfuse.errors import DataError
from mmdrfuse.files import write_text_atomic

# Settings that change a detector's result (the per-method cache key); device and workers do not.
PROTOCOL_KEYS = ("model", "weights", "epochs", "batch", "optimizer", "lr0", "imgsz", "seed")


def resolve_device(device: str) -> str:
    """``auto`` -> the first CUDA GPU when there is one, else ``cpu``; anything else as given."""
    if device != "auto":
        return str(device)
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def read_data_yaml(data_yaml: Path) -> Dict:
    """The dataset YAML with ``train``/``val`` resolved to absolute image folders."""
    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise DataError(f"YOLO dataset file does not exist: {data_yaml}")
    data = yaml.safe_load(data_yaml.read_text()) or {}
    base = Path(data.get("path") or data_yaml.parent)
    if not base.is_absolute():
        base = data_yaml.parent / base
    for split in ("train", "val"):
        if split not in data:
            raise DataError(f"YOLO dataset file {data_yaml} has no {split!r} entry")
        folder = Path(data[split])
        data[split] = folder if folder.is_absolute() else base / folder
    names = data.get("names", {0: "person"})
    data["names"] = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    return data


def label_file(image: Path) -> Path:
    """YOLO's convention: the last ``images`` folder of the path becomes ``labels``, suffix ``.txt``."""
    parts = list(image.parts)
    index = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:index], "labels", *parts[index + 1 :]).with_suffix(".txt")


def ground_truth(images: Dict[str, Path], class_names: List[str]) -> Dict:
    """COCO ground truth from YOLO label files (normalised ``class cx cy w h``) of ``images`` (stem -> path)."""
    entries = []
    for image_id, (stem, path) in enumerate(images.items(), start=1):
        width, height = image_size(path)
        boxes, labels = [], []
        labels_path = label_file(path)
        lines = labels_path.read_text().split("\n") if labels_path.is_file() else []
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                label, cx, cy, w, h = (float(v) for v in line.split())
            except ValueError:
                raise DataError(f"malformed YOLO label {labels_path}:{line_number}: {line!r}") from None
            boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
            labels.append(int(label))
        entries.append({"id": image_id, "file_name": stem, "width": width, "height": height, "boxes": boxes, "labels": labels})
    return coco_eval.build_ground_truth(entries, class_names)


def predict_coco(weights: Path, images: Dict[str, Path], gt: Dict, *, imgsz: int, batch: int, device: str) -> List[Dict]:
    """COCO result records of ``weights`` on ``images``, at the thresholds of ultralytics' validation
    (conf 0.001, NMS IoU 0.7, 300 detections) so both mAPs see the same candidate boxes."""
    from ultralytics import YOLO

    ids = {entry["file_name"]: entry["id"] for entry in gt["images"]}
    model = YOLO(str(weights))
    records: List[Dict] = []
    paths = list(images.values())
    for start in range(0, len(paths), batch):
        results = model.predict(
            [str(p) for p in paths[start : start + batch]],
            imgsz=imgsz, conf=0.001, iou=0.7, max_det=300, device=device, verbose=False,
        )
        for path, result in zip(paths[start : start + batch], results):
            boxes = result.boxes
            records += coco_eval.detection_records(
                ids[path.stem], boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy()
            )
    return records


def train_detector(
    data_yaml: Path,
    out_dir: Path,
    *,
    model: str,
    weights: Optional[str],
    epochs: int,
    batch: int,
    imgsz: int,
    optimizer: str,
    lr0: Optional[float] = None,
    seed: int,
    device: str,
    workers: int,
    amp: bool = False,
    allow_download: bool = False,
    verbose: bool = False,
    quiet: bool = False,
    extra: Optional[Dict] = None,
) -> Dict:
    """Train ``model`` (a YAML such as ``yolov5s.yaml``) starting from ``weights`` (a local .pt, or
    None for random initialisation) on ``data_yaml``; validate the best epoch; write the validation
    predictions (``predictions.json``) and ground truth (``ground_truth.json``) in COCO format.

    ``quiet`` silences ultralytics' console output (its progress bars included); ``extra`` holds
    further ultralytics training arguments (e.g. ``warmup_epochs``).
    Returns ``{"map50_95", "map50", "precision", "recall", "map50_95_coco", "map50_coco",
    "train_seconds", "weights"}``. ``weights`` must already be resolved (``resolve_weights``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = read_data_yaml(data_yaml)
    device = resolve_device(device)
    prepare_ultralytics(allow_download=allow_download)
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    LOGGER.setLevel(logging.WARNING if quiet else logging.INFO)
    detector = YOLO(model)
    if weights:
        detector.load(weights)
    options = dict(
        data=str(data_yaml), epochs=epochs, batch=batch, imgsz=imgsz, optimizer=optimizer, seed=seed,
        deterministic=True, device=device, workers=workers, amp=amp and device != "cpu",
        # plots=False: ultralytics' plots need a font download; our report draws its own figures.
        plots=False, project=str(out_dir.resolve()), name="yolo", exist_ok=True, verbose=verbose,
    )
    if lr0 is not None:
        options["lr0"] = lr0
    options.update(extra or {})
    start = time.perf_counter()
    metrics = detector.train(**options)
    train_seconds = time.perf_counter() - start
    best = out_dir / "yolo" / "weights" / "best.pt"
    if not best.is_file():
        best = out_dir / "yolo" / "weights" / "last.pt"
    values = metrics.results_dict

    val_images = list_images(data["val"])
    gt = ground_truth(val_images, data["names"])
    predictions = predict_coco(best, val_images, gt, imgsz=imgsz, batch=batch, device=device)
    coco = coco_eval.evaluate(gt, predictions)
    write_text_atomic(out_dir / "ground_truth.json", json.dumps(gt))
    write_text_atomic(out_dir / "predictions.json", json.dumps(predictions))
    return {
        "map50_95": float(values["metrics/mAP50-95(B)"]),
        "map50": float(values["metrics/mAP50(B)"]),
        "precision": float(values["metrics/precision(B)"]),
        "recall": float(values["metrics/recall(B)"]),
        "map50_95_coco": coco["map50_95"],
        "map50_coco": coco["map50"],
        "train_seconds": train_seconds,
        "weights": str(best),
    }
