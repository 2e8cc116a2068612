"""Train one ultralytics YOLO detector (YOLOv5u: ultralytics' YOLOv5 with the anchor-free head, not
the original anchor-based YOLOv5) on one method's dataset, run its validator once, and score the
validator's own predictions with pycocotools and the miss rate; the predictions are saved."""
from __future__ import annotations

import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Dict, Optional

import yaml

from mmdrfuse.detection import coco_eval
from mmdrfuse.detection.matching import match_coco
from mmdrfuse.detection.miss_rate import lamr_from_matches
from mmdrfuse.detection.yolo_offline import prepare_ultralytics
from mmdrfuse.detection.yolo_val import validate
from mmdrfuse.errors import DataError
from mmdrfuse.files import write_text_atomic

# Settings that change a detector's result (the per-method cache key); device and workers do not.
PROTOCOL_KEYS = (
    "model", "weights", "epochs", "batch", "optimizer", "lr0", "imgsz", "seed",
    "close_mosaic", "warmup_epochs", "mosaic", "amp",
)


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


def scratch_warning(weights: Optional[str], epochs: int) -> Optional[str]:
    """The one-line warning for a detector trained from random initialisation for 3 epochs or fewer."""
    if weights or epochs > 3:
        return None
    return (f"a detector trained from scratch (no pretrained weights, --weights none) learns almost nothing in "
            f"{epochs} epoch(s): its mAP compares initialisations, not fusion methods; give pretrained weights or more epochs")


def effective_protocol(options: Dict, device: str) -> Dict:
    """What ultralytics 8.4 does with the augmentation and schedule settings of a run of ``epochs``:
    mosaic is closed for the last ``close_mosaic`` epochs (``close_mosaic >= epochs``: never on),
    warm-up is capped at ``epochs - 1`` epochs (``BaseTrainer._get_warmup_iterations``), and AMP is
    used only on CUDA."""
    epochs = int(options["epochs"])
    mosaic_epochs = epochs if not options["close_mosaic"] else max(0, epochs - int(options["close_mosaic"]))
    return {
        "close_mosaic": int(options["close_mosaic"]), "mosaic": float(options["mosaic"]),
        "warmup_epochs": float(options["warmup_epochs"]), "amp": bool(options["amp"]),
        "mosaic_epochs": mosaic_epochs if options["mosaic"] > 0 else 0,
        "warmup_epochs_used": min(float(options["warmup_epochs"]), max(epochs - 1, 0)),
        "amp_used": bool(options["amp"]) and device != "cpu",
    }


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
    close_mosaic: int = 10,
    warmup_epochs: float = 3.0,
    mosaic: float = 1.0,
    amp: bool = False,
    device: str,
    workers: int,
    allow_download: bool = False,
    verbose: bool = False,
    quiet: bool = False,
    extra: Optional[Dict] = None,
) -> Dict:
    """Train ``model`` (a YAML such as ``yolov5s.yaml``: ultralytics' YOLOv5u, anchor-free head) starting
    from ``weights`` (a local .pt, or None for random initialisation) on ``data_yaml``, then run
    ultralytics' validator once on the best epoch and keep its own predictions.

    ``close_mosaic``, ``warmup_epochs``, ``mosaic`` and ``amp`` are ultralytics' settings, passed
    explicitly (see ``effective_protocol`` for what they do in a short run). ``quiet`` silences
    ultralytics' console output; ``extra`` holds further ultralytics training arguments (they win).
    Writes ``predictions.json`` (COCO records of the validator's predictions, at most 100 per image)
    and ``ground_truth.json`` (the boxes it scored them against) in ``out_dir``.
    Returns ``{"map50_95", "map50", "precision", "recall"`` (ultralytics' validator), ``"coco"``
    (pycocotools' ``STATS`` of the same predictions), ``"map50_95_coco", "map50_coco"`` (its AP
    and AP50), ``"lamr"`` (log-average miss rate), ``"seed", "protocol"`` (``effective_protocol``),
    ``"train_seconds", "weights", "predictions", "ground_truth"`` (paths)}``.
    ``weights`` must already be resolved (``resolve_weights``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = read_data_yaml(data_yaml)
    device = resolve_device(device)
    message = scratch_warning(weights, epochs)
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    prepare_ultralytics(allow_download=allow_download)
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    LOGGER.setLevel(logging.WARNING if quiet else logging.INFO)
    detector = YOLO(model)
    if weights:
        detector.load(weights)
    options = dict(
        data=str(data_yaml), epochs=epochs, batch=batch, imgsz=imgsz, optimizer=optimizer, seed=seed,
        deterministic=True, device=device, workers=workers, close_mosaic=close_mosaic,
        warmup_epochs=warmup_epochs, mosaic=mosaic, amp=amp and device != "cpu",
        # plots=False: ultralytics' plots need a font download; our report draws its own figures.
        plots=False, project=str(out_dir.resolve()), name="yolo", exist_ok=True, verbose=verbose,
    )
    if lr0 is not None:
        options["lr0"] = lr0
    options.update(extra or {})
    protocol = effective_protocol({**options, "amp": (extra or {}).get("amp", amp)}, device)
    start = time.perf_counter()
    detector.train(**options)
    train_seconds = time.perf_counter() - start
    best = out_dir / "yolo" / "weights" / "best.pt"
    if not best.is_file():
        best = out_dir / "yolo" / "weights" / "last.pt"

    validation = validate(best, data_yaml, data["names"], out_dir, imgsz=imgsz, batch=batch, device=device,
                          workers=workers)
    gt, predictions = validation["ground_truth"], validation["predictions"]
    coco = coco_eval.evaluate(gt, predictions) if gt["annotations"] else {name: None for name in coco_eval.STATS}
    matches = match_coco(gt, predictions)
    lamr = lamr_from_matches(matches) if len(gt["categories"]) == 1 else None
    write_text_atomic(out_dir / "ground_truth.json", json.dumps(gt))
    write_text_atomic(out_dir / "predictions.json", json.dumps(predictions))
    return {
        **validation["metrics"],
        "coco": coco,
        "map50_95_coco": coco["AP"],
        "map50_coco": coco["AP50"],
        "lamr": None if lamr is None or math.isnan(lamr) else lamr,
        "seed": seed,
        "protocol": protocol,
        "train_seconds": train_seconds,
        "weights": str(best),
        "predictions": str(out_dir / "predictions.json"),
        "ground_truth": str(out_dir / "ground_truth.json"),
    }
