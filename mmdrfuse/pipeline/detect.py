"""``mmdrfuse detect``: fuse LLVIP with each method, train one YOLO detector per method on the
same subset of ids, and compare them (the paper's section 4.5 and Figure 8).

Layout of ``--out``::

    manifest.json               the train/val ids, drawn once and reused by every method
    images/<method>/<id>.png    the built-in methods' images (``fusion.json`` written last)
    datasets/<method>/          one YOLO dataset per method
    methods/<method>/           detector run, result.json, predictions.json, ground_truth.json
    results.json results.csv report.md map_vs_time.png examples.png
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Optional

from mmdrfuse.data.llvip import check_root
from mmdrfuse.detection.methods import NETWORK_METHODS, make_method_images, parse_builtins, parse_method, subset_pairs
from mmdrfuse.errors import DataError
from mmdrfuse.files import write_text_atomic
from mmdrfuse.pipeline.compare import build_datasets, fingerprint, report, train_methods


def subset_manifest(root: Path, out: Path, *, train: int, val: int, seed: int) -> Path:
    """``out/manifest.json`` from select_subset, kept as is when it already holds the same request."""
    from mmdrfuse.data.yolo import select_subset

    path = Path(out) / "manifest.json"
    request = {"root": str(Path(root).resolve()), "train": train, "val": val, "seed": seed}
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing.get("request") == request:
            return path
    manifest = select_subset(root, train=train, val=val, seed=seed)
    write_text_atomic(path, json.dumps({**manifest, "request": request}, indent=2) + "\n")
    return path


def builtin_images(
    name: str, root: Path, manifest: Dict, out: Path, *, weights: Optional[Path], device: str, progress: bool
) -> Optional[float]:
    """Make (or reuse) ``out/<name>/``; returns the fusion ms per image."""
    folder = Path(out) / name
    # The weights by content: retraining to the same path must not reuse the old fused images.
    weights_digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest() if weights else None
    key = fingerprint({"ids": manifest["train"] + manifest["val"], "root": str(Path(root).resolve()),
                       "weights": weights_digest})
    record = folder / "fusion.json"
    if record.is_file() and json.loads(record.read_text()).get("key") == key:
        return json.loads(record.read_text())["fusion_ms_per_image"]
    pairs = subset_pairs(root, manifest["train"] + manifest["val"])
    milliseconds = make_method_images(name, pairs, folder, weights=weights, device=device, progress=progress)
    write_text_atomic(record, json.dumps({"key": key, "fusion_ms_per_image": milliseconds}) + "\n")
    return milliseconds


def run_detect(*, root, out, method, builtin, model, weights, epochs, batch, optimizer, imgsz, device, seed, train, val,
               workers, student_weights, teacher_weights, quiet) -> int:
    from mmdrfuse.detection.yolo_offline import resolve_weights

    root = check_root(root)
    out = Path(out)
    user_methods = dict(parse_method(text) for text in method or [])
    builtins = parse_builtins(builtin)
    clash = sorted(set(user_methods) & set(builtins))
    if clash:
        raise DataError(f"method name(s) given both as --method and --builtin: {', '.join(clash)}")
    if not user_methods and not builtins:
        raise DataError("no method to compare: give --method NAME=DIR and/or --builtin NAMES")
    network_weights = {}
    for kind in NETWORK_METHODS:
        given = {"student": student_weights, "teacher": teacher_weights}[kind]
        if kind in builtins:
            if not given:
                raise DataError(f"built-in method {kind!r} needs --{kind}-weights PATH (no {kind} weights ship yet)")
            if not Path(given).is_file():
                raise DataError(f"--{kind}-weights file does not exist: {given}")
            network_weights[kind] = Path(given)
    # Before any work: a missing detector checkpoint on an offline machine must fail now, not after fusing.
    start_weights = resolve_weights(weights)
    allow_download = start_weights is not None and not Path(start_weights).is_file()

    manifest_path = subset_manifest(root, out, train=train, val=val, seed=seed)
    manifest = json.loads(manifest_path.read_text())
    images: Dict[str, Path] = {}
    fusion_ms: Dict[str, Optional[float]] = {}
    for name in builtins:
        fusion_ms[name] = builtin_images(name, root, manifest, out / "images", weights=network_weights.get(name),
                                         device=device, progress=not quiet)
        images[name] = out / "images" / name
    for name, folder in user_methods.items():
        images[name], fusion_ms[name] = folder, None
    log = (lambda *a, **k: None) if quiet else print
    datasets = build_datasets(root, images, manifest_path, out / "datasets", progress=not quiet, log=log)
    protocol = {"model": model, "weights": start_weights, "epochs": epochs, "batch": batch,
                "optimizer": optimizer, "imgsz": imgsz, "seed": seed}
    results = train_methods(datasets, out, protocol, device=device, workers=workers,
                            allow_download=allow_download, quiet=quiet, log=log)
    paths = report(out, results, fusion_ms, {**protocol, "device": device}, root=root, datasets=datasets,
                   detector_dir=out, manifest=manifest)
    print(f"report: {paths['markdown']}")
    return 0
