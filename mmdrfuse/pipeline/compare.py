"""The per-method comparison: one YOLO dataset per method on the same subset of ids, one
detector per dataset, one report. Used by ``mmdrfuse detect`` and by the pipeline's stages.

A method's finished detector is recorded in ``<out>/methods/<name>/result.json`` together with
the settings that produced it, so a re-run with the same settings skips it and an
interrupted comparison continues with the next method.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Dict, Optional

from mmdrfuse.data.io import list_images
from mmdrfuse.data.yolo import build_yolo_dataset
from mmdrfuse.detection.methods import SINGLE_MODALITIES, subset_pairs
from mmdrfuse.detection.report import write_report
from mmdrfuse.detection.yolo_train import PROTOCOL_KEYS, train_detector
from mmdrfuse.errors import DataError
from mmdrfuse.files import write_text_atomic


def fingerprint(value) -> str:
    """12 hex digits of the SHA-256 of ``value`` as canonical JSON."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def folder_fingerprint(folder: Path) -> str:
    """Changes when a file under ``folder`` is added, removed or changed: text files (labels,
    YAML) by content, images by size (they are links, rebuilt with new times on every dataset
    build); ultralytics' label caches (``*.cache``, written on first use) do not count."""
    entries = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.suffix == ".cache":
            continue
        if path.suffix in (".txt", ".yaml", ".json"):
            entries.append((str(path.relative_to(folder)), hashlib.sha256(path.read_bytes()).hexdigest()))
        else:
            entries.append((str(path.relative_to(folder)), path.stat().st_size))
    return fingerprint(entries)


def build_datasets(
    root: Path, method_images: Dict[str, Path], manifest: Path, out: Path, *, progress: bool = True, log: Callable = print
) -> Dict[str, Path]:
    """``{name: data.yaml}``: one YOLO dataset per method under ``out/<name>``, all from ``manifest``.

    Raises DataError when a split ends up empty (e.g. no annotation for its ids): ultralytics
    would fail later with a message that does not say why."""
    datasets = {}
    for name, images in method_images.items():
        datasets[name] = build_yolo_dataset(root, images, Path(out) / name, manifest=manifest, progress=progress, log=log)
        record = json.loads((Path(out) / name / "manifest.json").read_text())
        empty = [split for split, count in record["counts"].items() if not count]
        if empty:
            skipped = {reason: len(ids) for reason, ids in record["skipped"].items()}
            raise DataError(
                f"the YOLO dataset of {name!r} has no {' and no '.join(empty)} image with a usable annotation "
                f"(skipped: {skipped['no_annotation']} without annotation, {skipped['bad_annotation']} with a bad one, "
                f"in {Path(root) / 'Annotations'}); detection needs annotated train and val images"
            )
    return datasets


def train_methods(
    datasets: Dict[str, Path],
    out: Path,
    protocol: Dict,
    *,
    device: str = "auto",
    workers: int = 0,
    allow_download: bool = False,
    quiet: bool = False,
    log: Callable = print,
) -> Dict[str, Dict]:
    """Train and score one detector per dataset with the settings of ``protocol`` (PROTOCOL_KEYS)."""
    results = {}
    for index, (name, data_yaml) in enumerate(datasets.items(), start=1):
        method_dir = Path(out) / "methods" / name
        key = {k: protocol.get(k) for k in PROTOCOL_KEYS}
        key["dataset"] = folder_fingerprint(Path(data_yaml).parent)
        record_file = method_dir / "result.json"
        if record_file.is_file():
            record = json.loads(record_file.read_text())
            if record.get("key") == key:
                log(f"[{index}/{len(datasets)}] {name}: done before, reusing {record_file}")
                results[name] = record["result"]
                continue
        log(f"[{index}/{len(datasets)}] {name}: training {protocol['model']} for {protocol['epochs']} epoch(s)")
        result = train_detector(
            data_yaml, method_dir, model=protocol["model"], weights=protocol.get("weights"),
            epochs=protocol["epochs"], batch=protocol["batch"], imgsz=protocol["imgsz"],
            optimizer=protocol.get("optimizer", "SGD"), lr0=protocol.get("lr0"), seed=protocol.get("seed", 0),
            device=device, workers=workers, allow_download=allow_download, quiet=quiet,
        )
        write_text_atomic(record_file, json.dumps({"key": key, "result": result}, indent=2) + "\n")
        log(f"    {name}: mAP@.5:.95 {result['map50_95']:.3f} (pycocotools {result['map50_95_coco']:.3f}), mAP@.5 {result['map50']:.3f}")
        results[name] = result
    return results


def example_columns(root: Path, datasets: Dict[str, Path], detector_dir: Path, manifest: Dict) -> Dict:
    """plot_examples' arguments: the input modalities (when they are not methods) then every method,
    each method's images read from its YOLO dataset's val split."""
    pairs = subset_pairs(root, manifest["val"])
    columns = [
        {"title": f"{modality} (input)", "images": {p.id: (p.ir if modality == "infrared" else p.vi) for p in pairs}}
        for modality in SINGLE_MODALITIES
        if modality not in datasets
    ]
    for name, data_yaml in datasets.items():
        predictions_file = Path(detector_dir) / "methods" / name / "predictions.json"
        columns.append({
            "title": name,
            "images": list_images(Path(data_yaml).parent / "images" / "val"),
            "predictions": json.loads(predictions_file.read_text()),
        })
    first = next(iter(datasets))
    ground_truth = json.loads((Path(detector_dir) / "methods" / first / "ground_truth.json").read_text())
    return {"columns": columns, "ground_truth": ground_truth}


def report(
    out: Path,
    results: Dict[str, Dict],
    fusion_ms: Dict[str, Optional[float]],
    protocol: Dict,
    *,
    root: Path,
    datasets: Dict[str, Path],
    detector_dir: Path,
    manifest: Dict,
) -> Dict[str, Path]:
    """results.json / .csv, report.md and the two figures in ``out``."""
    methods = {}
    for name, result in results.items():
        methods[name] = {k: result.get(k) for k in ("map50_95", "map50", "precision", "recall", "map50_95_coco", "map50_coco")}
        methods[name]["fusion_ms_per_image"] = fusion_ms.get(name)
        methods[name]["train_seconds"] = result.get("train_seconds")
    synthetic = (Path(root) / "synthetic.json").is_file()
    full_protocol = {**protocol, "data": str(Path(root).resolve()), "synthetic_data": synthetic,
                     "train_images": len(manifest["train"]), "val_images": len(manifest["val"])}
    examples = example_columns(root, datasets, detector_dir, manifest)
    return write_report(Path(out), {"methods": methods, "protocol": full_protocol}, examples)
