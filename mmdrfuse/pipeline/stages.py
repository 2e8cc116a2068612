"""The stages of the pipeline, one named function each: ``stage(folder, **inputs) -> outputs``.

Each writes only inside its ``folder`` and returns a JSON-able mapping of what it made (the
``DONE`` record of mmdrfuse.pipeline.cache). The orchestration is in mmdrfuse.pipeline.run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

from mmdrfuse.config import defaults
from mmdrfuse.data.io import list_images
from mmdrfuse.detection.methods import SINGLE_MODALITIES, make_method_images, subset_pairs
from mmdrfuse.detection.report import write_report
from mmdrfuse.detection.yolo_train import train_detector
from mmdrfuse.errors import DataError
from mmdrfuse.files import write_text_atomic


def make_synthetic(folder: Path, *, scenes: Mapping, progress: bool) -> Dict:
    """SYNTHETIC LLVIP-like scenes (``scenes``: generator settings) in ``folder/llvip``."""
    from mmdrfuse.data.synthetic import generate

    return {"root": str(generate(folder / "llvip", progress=progress, **{**defaults("prepare_synthetic"), **scenes}))}


def prepare(folder: Path, *, root: Path, patches: Optional[Mapping], subset: Mapping, progress: bool,
            log: Callable) -> Dict:
    """The fusion training patches (when ``patches`` settings are given) and the detection subset."""
    from mmdrfuse.data.patches import prepare_patches
    from mmdrfuse.data.yolo import select_subset

    outputs = {}
    if patches is not None:
        outputs["patches"] = str(prepare_patches(root, out=folder / "patches", progress=progress, log=log, **patches))
    manifest = select_subset(root, **subset)
    write_text_atomic(folder / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    outputs["manifest"] = str(folder / "manifest.json")
    return outputs


def train_network(folder: Path, *, kind: str, recipe: Mapping, patches: str, teacher: Optional[str], device,
                  progress: bool, log: Callable) -> Dict:
    """Train the teacher or the student into ``folder``; an interrupted training continues."""
    from mmdrfuse.fusion.train import RESUME_FILE, train_model

    resume = (folder / RESUME_FILE).exists()
    options = {"device": device, **recipe, "resume": resume}  # a section's own device wins
    weights = train_model(kind, patches=patches, out_dir=folder, teacher_weights=teacher, progress=progress, log=log,
                          **options)
    return {"weights": str(weights)}


def fuse_method(folder: Path, *, name: str, root: Path, ids: List[str], weights: Optional[str], device,
                scaling: str, batch: int, progress: bool) -> Dict:
    """The images of built-in method ``name`` for ``ids``, in ``folder/images``."""
    pairs = subset_pairs(root, ids)
    milliseconds = make_method_images(name, pairs, folder / "images", weights=weights, device=device,
                                      scaling=scaling, batch=batch, progress=progress)
    return {"images": str(folder / "images"), "fusion_ms_per_image": milliseconds}


def build_dataset(folder: Path, *, name: str, root: Path, images: str, manifest: str, progress: bool,
                  log: Callable) -> Dict:
    """The YOLO dataset of one method on the subset of ``manifest``; DataError when a split is empty
    (ultralytics would fail later with a message that does not say why)."""
    from mmdrfuse.data.yolo import build_yolo_dataset

    data_yaml = build_yolo_dataset(root, images, folder / "dataset", manifest=manifest, strict=False, progress=progress,
                                   log=log)
    record = json.loads((folder / "dataset" / "manifest.json").read_text())
    empty = [split for split, count in record["counts"].items() if not count]
    if empty:
        skipped = {reason: len(ids) for reason, ids in record["skipped"].items()}
        raise DataError(
            f"the YOLO dataset of {name!r} has no {' and no '.join(empty)} image with a usable annotation "
            f"(skipped: {skipped['no_annotation']} without annotation, {skipped['bad_annotation']} with a bad one, "
            f"in {Path(root) / 'Annotations'}); detection needs annotated train and val images"
        )
    return {"data_yaml": str(data_yaml)}


def warm_start(folder: Path, *, warm: Mapping, protocol: Mapping, device, workers: int, progress: bool,
               log: Callable) -> Dict:
    """A detector trained on separate synthetic scenes, shown half as infrared and half as visible,
    for the per-method runs to start from, as a user would start from pretrained weights. The
    scenes have every pedestrian visible in both modalities so no label asks for the invisible."""
    from mmdrfuse.data.synthetic import generate
    from mmdrfuse.data.yolo import build_yolo_dataset, select_subset

    root = generate(folder / "llvip", progress=progress, **{**defaults("prepare_synthetic"), **warm["synthetic"]})
    manifest = select_subset(root, train=warm["synthetic"]["train"], val=warm["synthetic"]["test"], seed=0)
    write_text_atomic(folder / "manifest.json", json.dumps(manifest) + "\n")
    pairs = subset_pairs(root, manifest["train"] + manifest["val"])
    for index, pair in enumerate(pairs):
        make_method_images("infrared" if index % 2 == 0 else "visible", [pair], folder / "mixture", progress=False)
    data_yaml = build_yolo_dataset(root, folder / "mixture", folder / "dataset", manifest=folder / "manifest.json",
                                   strict=False, progress=progress, log=log)
    result = train_detector(
        data_yaml, folder / "detector", model=warm.get("model", protocol["model"]), weights=None,
        epochs=int(warm["epochs"]), batch=int(warm.get("batch", protocol["batch"])),
        imgsz=int(warm.get("imgsz", protocol["imgsz"])), optimizer=warm.get("optimizer", "SGD"),
        seed=int(warm.get("seed", 0)), device=device, workers=workers, extra=warm.get("ultralytics"), quiet=not progress,
    )
    log(f"warm start: mAP@.5:.95 {result['map50_95']:.3f}, mAP@.5 {result['map50']:.3f} on its own validation images")
    return {"weights": result["weights"], "map50_95": result["map50_95"], "map50": result["map50"]}


def detect_method(folder: Path, *, name: str, data_yaml: str, protocol: Mapping, device, workers: int,
                  allow_download: bool, progress: bool, log: Callable) -> Dict:
    """Train and score one method's detector with the settings of ``protocol``."""
    log(f"    {name}: training {protocol['model']} for {protocol['epochs']} epoch(s)")
    result = train_detector(
        data_yaml, folder, model=protocol["model"], weights=protocol.get("weights"),
        epochs=protocol["epochs"], batch=protocol["batch"], imgsz=protocol["imgsz"],
        optimizer=protocol["optimizer"], lr0=protocol.get("lr0"), seed=protocol["seed"],
        close_mosaic=protocol["close_mosaic"], warmup_epochs=protocol["warmup_epochs"], mosaic=protocol["mosaic"],
        amp=protocol["amp"], device=device, workers=workers, allow_download=allow_download, quiet=not progress,
    )
    log(f"    {name}: mAP@.5:.95 {result['map50_95']:.3f} (pycocotools {result['map50_95_coco']:.3f}), mAP@.5 {result['map50']:.3f}")
    return {"result": result, "detector": str(folder)}


def example_columns(root: Path, datasets: Mapping[str, str], detectors: Mapping[str, str], manifest: Mapping) -> Dict:
    """plot_examples' arguments: the input modalities (when they are not methods) then every method,
    each method's images read from its YOLO dataset's val split."""
    pairs = subset_pairs(root, manifest["val"])
    columns = [
        {"title": f"{modality} (input)", "images": {p.id: (p.ir if modality == "infrared" else p.vi) for p in pairs}}
        for modality in SINGLE_MODALITIES
        if modality not in datasets
    ]
    for name, data_yaml in datasets.items():
        columns.append({
            "title": name,
            "images": list_images(Path(data_yaml).parent / "images" / "val"),
            "predictions": json.loads((Path(detectors[name]) / "predictions.json").read_text()),
        })
    first = next(iter(datasets))
    ground_truth = json.loads((Path(detectors[first]) / "ground_truth.json").read_text())
    return {"columns": columns, "ground_truth": ground_truth}


def make_report(folder: Path, *, results: Mapping[str, Dict], fusion_ms: Mapping[str, Optional[float]],
                protocol: Mapping, root: Path, datasets: Mapping[str, str], detectors: Mapping[str, str],
                manifest: Mapping) -> Dict:
    """results.json / .csv, report.md and the two figures in ``folder``."""
    methods = {}
    for name, result in results.items():
        methods[name] = {k: result.get(k) for k in ("map50_95", "map50", "precision", "recall", "map50_95_coco", "map50_coco")}
        methods[name]["fusion_ms_per_image"] = fusion_ms.get(name)
        methods[name]["train_seconds"] = result.get("train_seconds")
    synthetic = (Path(root) / "synthetic.json").is_file()
    full_protocol = {**protocol, "data": str(Path(root).resolve()), "synthetic_data": synthetic,
                     "train_images": len(manifest["train"]), "val_images": len(manifest["val"])}
    examples = example_columns(root, datasets, detectors, manifest)
    write_report(folder, {"methods": methods, "protocol": full_protocol}, examples)
    return {"report": str(folder)}
