"""The stages of the pipeline, one named function each: ``stage(folder, **inputs) -> outputs``.

Each writes only inside its ``folder`` and returns a JSON-able mapping of what it made (the
``DONE`` record of mmdrfuse.pipeline.cache). The orchestration is in mmdrfuse.pipeline.run.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

from mmdrfuse.config import defaults
from mmdrfuse.data.io import list_images
from mmdrfuse.detection.methods import SINGLE_MODALITIES, make_method_images, subset_pairs
from mmdrfuse.detection.report import write_report
from mmdrfuse.detection.summary import summarise
from mmdrfuse.detection.yolo_train import train_detector
from mmdrfuse.errors import DataError
from mmdrfuse.files import write_text_atomic


def make_synthetic(folder: Path, *, scenes: Mapping, progress: bool) -> Dict:
    """SYNTHETIC LLVIP-like scenes (``scenes``: generator settings) in ``folder/llvip``."""
    from mmdrfuse.data.synthetic import generate

    return {"root": str(generate(folder / "llvip", progress=progress, **{**defaults("prepare_synthetic"), **scenes}))}


def prepare(folder: Path, *, root: Path, patches: Optional[Mapping], subset: Mapping, progress: bool,
            log: Callable) -> Dict:
    """The fusion training patches (when ``patches`` settings are given) and the detection subset:
    drawn with ``subset``'s ``train``, ``val`` and ``seed``, or the exact ids of its ``manifest``."""
    from mmdrfuse.data.patches import prepare_patches
    from mmdrfuse.data.yolo import read_manifest, select_subset

    outputs = {}
    if patches is not None:
        outputs["patches"] = str(prepare_patches(root, out=folder / "patches", progress=progress, log=log, **patches))
    if subset.get("manifest"):
        manifest = read_manifest(subset["manifest"])
        subset_pairs(root, manifest["train"] + manifest["val"])  # every id must be a pair of this root
        log(f"subset of {subset['manifest']}: {len(manifest['train'])} train + {len(manifest['val'])} val ids")
    else:
        manifest = select_subset(root, **{k: subset[k] for k in ("train", "val", "seed")})
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
    with warnings.catch_warnings():
        # From scratch by design: it stands for pretrained weights, and its own epochs are the config's choice.
        warnings.filterwarnings("ignore", message="a detector trained from scratch", category=RuntimeWarning)
        result = train_detector(
            data_yaml, folder / "detector", model=warm.get("model", protocol["model"]), weights=None,
            epochs=int(warm["epochs"]), batch=int(warm.get("batch", protocol["batch"])),
            imgsz=int(warm.get("imgsz", protocol["imgsz"])), optimizer=warm.get("optimizer", "SGD"),
            seed=int(warm.get("seed", 0)), device=device, workers=workers, extra=warm.get("ultralytics"),
            quiet=not progress,
        )
    log(f"warm start: mAP@.5:.95 {result['map50_95']:.3f}, mAP@.5 {result['map50']:.3f} on its own validation images")
    return {"weights": result["weights"], "map50_95": result["map50_95"], "map50": result["map50"]}


def detect_method(folder: Path, *, name: str, data_yaml: str, protocol: Mapping, device, workers: int,
                  allow_download: bool, progress: bool) -> Dict:
    """Train and score one detector of method ``name`` with the settings of ``protocol`` (its
    ``seed`` the training seed). A task of mmdrfuse.pipeline.executor: plain, picklable arguments."""
    seed = protocol["seed"]
    if progress:
        print(f"    {name}, seed {seed}: training {protocol['model']} for {protocol['epochs']} epoch(s)")
    with warnings.catch_warnings():
        # The scratch warning was printed once, before any work (mmdrfuse.pipeline.run).
        warnings.filterwarnings("ignore", message="a detector trained from scratch", category=RuntimeWarning)
        result = train_detector(
            data_yaml, folder, model=protocol["model"], weights=protocol.get("weights"),
            epochs=protocol["epochs"], batch=protocol["batch"], imgsz=protocol["imgsz"],
            optimizer=protocol["optimizer"], lr0=protocol.get("lr0"), seed=seed,
            close_mosaic=protocol["close_mosaic"], warmup_epochs=protocol["warmup_epochs"], mosaic=protocol["mosaic"],
            amp=protocol["amp"], device=device, workers=workers, allow_download=allow_download, quiet=not progress,
        )
    if progress:
        print(f"    {name}, seed {seed}: mAP@.5:.95 {result['map50_95']:.3f} (pycocotools {result['map50_95_coco']:.3f}), "
              f"mAP@.5 {result['map50']:.3f}")
    return {"result": result, "detector": str(folder)}


def example_columns(root: Path, datasets: Mapping[str, str], detectors: Mapping[str, str], manifest: Mapping) -> Dict:
    """plot_examples' arguments: the input modalities (when they are not methods) then every method,
    each method's images read from its YOLO dataset's val split, its boxes from ``detectors[name]``
    (the first training seed's detector folder)."""
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


def skipped_ids(datasets: Mapping[str, str]) -> Dict[str, Dict[str, List[str]]]:
    """``{method: {reason: [ids]}}``: the ids of the subset each method's YOLO dataset skipped."""
    skipped = {}
    for name, data_yaml in datasets.items():
        record = json.loads((Path(data_yaml).parent / "manifest.json").read_text())
        skipped[name] = {reason: sorted(ids) for reason, ids in record["skipped"].items()}
    return skipped


def make_report(folder: Path, *, runs: Mapping[str, List[Dict]], fusion_ms: Mapping[str, Optional[float]],
                protocol: Mapping, bootstrap: int, root: Path, datasets: Mapping[str, str],
                detectors: Mapping[str, List[str]], manifest: Mapping) -> Dict:
    """results.json / .csv, report.md, the two figures and manifest.json in ``folder``.

    ``runs``: ``{method: [train_detector's result per training seed]}``; ``detectors``: their folders.
    The figures are ``summarise``'s (means over seeds, bootstrap intervals with ``bootstrap``
    resamples, the paired comparisons); ``manifest.json`` is the subset (``detect --manifest``
    reuses it) with every skipped id and the reason, per method."""
    results = summarise({name: list(seeds) for name, seeds in runs.items()}, fusion_ms=dict(fusion_ms),
                        resamples=bootstrap)
    synthetic = (Path(root) / "synthetic.json").is_file()
    seeds = sorted({seed for per_method in runs.values() for seed in (r.get("seed") for r in per_method)}, key=str)
    results["protocol"] = {**protocol, "seeds": seeds, "data": str(Path(root).resolve()), "synthetic_data": synthetic,
                           "train_images": len(manifest["train"]), "val_images": len(manifest["val"])}
    write_text_atomic(folder / "manifest.json", json.dumps({**manifest, "skipped": skipped_ids(datasets)}, indent=2) + "\n")
    examples = example_columns(root, datasets, {name: folders[0] for name, folders in detectors.items()}, manifest)
    write_report(folder, results, examples)
    return {"report": str(folder)}
