"""The end-to-end pipeline: prepare -> train teacher -> train student -> fuse -> YOLO datasets
-> (warm start) -> detect -> report, driven by one YAML config (configs/llvip-paper.yaml).

Every stage is cached by the scheme of mmdrfuse.pipeline.cache; fusion, datasets and detectors
are one stage per method (``fuse-max-<key>/``), so adding a method or changing one method's
images reruns that method only. ``mmdrfuse detect`` is this pipeline without its training
stages (:func:`mmdrfuse.pipeline.detect.run_detect`), with the user's own image folders as
extra methods.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional

from mmdrfuse.detection.methods import NETWORK_METHODS
from mmdrfuse.files import atomic_directory
from mmdrfuse.pipeline import stages
from mmdrfuse.pipeline.cache import DONE, Run
from mmdrfuse.pipeline.config import check_config, load_config, merge, networks_to_train, weights_path

STAGES = ("synthetic", "prepare", "teacher", "student", "fuse", "datasets", "warmstart", "detect", "report")
DEFAULT_OUT = "runs/pipeline"  # when neither --out nor the config's out is given

__all__ = ["DEFAULT_OUT", "STAGES", "check_config", "load_config", "merge", "run_pipeline"]


def _detector_start(config: Mapping):
    """The detector's starting weights, resolved before any stage (missing weights on an offline
    machine must stop the run before hours of work), and whether ultralytics may download them."""
    if config.get("warm_start"):
        return None, False
    from mmdrfuse.detection.yolo_offline import resolve_weights

    weights = resolve_weights(config["detect"]["weights"])
    return weights, weights is not None and not Path(weights).is_file()


def run_pipeline(config: Mapping, out: Path, *, methods: Optional[Mapping[str, Path]] = None,
                 force_from: Optional[str] = None, progress: bool = True, log: Callable = print) -> Dict:
    """Run every stage of ``config`` under ``out``; ``methods`` adds user image folders
    (``{name: folder}``, one image per id) to the comparison. Returns ``{"report": folder,
    "ran": [stages], "keys": {...}}``."""
    config = check_config(config)
    methods = dict(methods or {})
    run = Run(out, STAGES, force_from, log)
    device, workers = config.get("device", "auto"), int(config.get("workers", 0))
    start_weights, allow_download = _detector_start(config)

    data = config["data"]
    if data.get("synthetic"):
        synthetic = run.stage("synthetic", stages.make_synthetic, settings=data["synthetic"], scenes=data["synthetic"],
                              progress=progress)
        root, data_depends, data_inputs = Path(synthetic["root"]), ["synthetic"], {}
    else:
        root, data_depends, data_inputs = Path(data["root"]), [], {"data": Path(data["root"])}

    to_train = networks_to_train(config)
    patches = config["prepare"].get("patches") if to_train else None
    subset = config["prepare"]["subset"]
    prepared = run.stage("prepare", stages.prepare, settings={"patches": patches, "subset": subset},
                         depends=data_depends, inputs=data_inputs, root=root, patches=patches, subset=subset,
                         progress=progress, log=log)
    manifest = json.loads(Path(prepared["manifest"]).read_text())

    weights, weights_key = _network_weights(run, config, to_train, prepared, device=device, progress=progress, log=log)
    images, fusion_ms, image_key = _method_images(run, config, methods, root, manifest, weights, weights_key,
                                                  device=device, progress=progress)

    datasets: Dict[str, str] = {}
    for name, folder in images.items():
        built = run.stage("datasets", stages.build_dataset, item=name, settings={},
                          depends=["prepare"] + image_key[name]["depends"], inputs=image_key[name]["inputs"],
                          name=name, root=root, images=folder, manifest=prepared["manifest"], progress=progress, log=log)
        datasets[name] = built["data_yaml"]

    protocol, detect_depends, detect_inputs = _detector_protocol(run, config, start_weights, device=device,
                                                                 workers=workers, progress=progress, log=log)

    results: Dict[str, Dict] = {}
    detectors: Dict[str, str] = {}
    for index, (name, data_yaml) in enumerate(datasets.items(), start=1):
        log(f"[{index}/{len(datasets)}] {name}")
        detected = run.stage("detect", stages.detect_method, item=name, settings={"protocol": protocol, "device": device},
                             depends=[f"datasets/{name}"] + detect_depends, inputs=detect_inputs, name=name,
                             data_yaml=data_yaml, protocol=protocol, device=device, workers=workers,
                             allow_download=allow_download, progress=progress, log=log)
        results[name], detectors[name] = detected["result"], detected["detector"]

    reported = run.stage("report", stages.make_report, settings={"device": device},
                         depends=[f"detect/{name}" for name in datasets] + [f"fuse/{n}" for n in config["fuse"]["methods"]],
                         results=results, fusion_ms=fusion_ms, protocol={**protocol, "device": device}, root=root,
                         datasets=datasets, detectors=detectors, manifest=manifest)
    report_folder = Path(reported["report"])
    # The latest report, where a user looks first, replaced as a whole.
    with atomic_directory(run.out / "report") as staging:
        for file in report_folder.iterdir():
            if file.name != DONE:
                shutil.copy2(file, staging / file.name)
    return {"report": str(run.out / "report"), "ran": run.ran, "keys": run.keys}


def _network_weights(run: Run, config: Mapping, to_train, prepared: Mapping, *, device, progress: bool,
                     log: Callable):
    """``{kind: weights path}`` of the fusion networks (given, or trained by a stage), and how each
    enters the keys of the stages that use it: the training stage's key, or the given file's content."""
    weights: Dict[str, Optional[str]] = {}
    weights_key: Dict[str, Dict] = {}
    for kind in NETWORK_METHODS:
        given = weights_path(config, kind)
        if given is not None:
            weights[kind] = str(given)
            weights_key[kind] = {"depends": [], "inputs": {f"{kind}_weights": given}}
    for kind in to_train:
        section = {k: v for k, v in (config.get(kind) or {}).items() if k != "weights"}
        teacher = weights.get("teacher") if kind == "student" else None
        depends = ["prepare"] + (["teacher"] if kind == "student" and "teacher" in to_train else [])
        inputs = {"teacher_weights": Path(teacher)} if teacher and "teacher" not in to_train else {}
        if section.get("vgg_weights"):
            inputs["vgg_weights"] = Path(section["vgg_weights"])
        trained = run.stage(kind, stages.train_network, settings={"recipe": section, "device": device},
                            depends=depends, inputs=inputs, kind=kind, recipe=section, patches=prepared["patches"],
                            teacher=teacher, device=device, progress=progress, log=log)
        weights[kind] = trained["weights"]
        weights_key[kind] = {"depends": [kind], "inputs": {}}
    return weights, weights_key


def _method_images(run: Run, config: Mapping, methods: Mapping[str, Path], root: Path, manifest: Mapping,
                   weights: Mapping, weights_key: Mapping, *, device, progress: bool):
    """The image folder of every method (built-in ones fused by a stage each, the user's as they
    are), their fusion times, and how each enters its dataset's key."""
    images: Dict[str, str] = {}
    fusion_ms: Dict[str, Optional[float]] = {}
    image_key: Dict[str, Dict] = {}
    fuse = config["fuse"]
    for name in fuse["methods"]:
        network = weights_key.get(name, {"depends": [], "inputs": {}})
        settings = {"scaling": fuse["scaling"], "batch": fuse["batch"], "device": device} if name in NETWORK_METHODS else {}
        fused = run.stage("fuse", stages.fuse_method, item=name, settings=settings,
                          depends=["prepare"] + network["depends"], inputs=network["inputs"],
                          name=name, root=root, ids=manifest["train"] + manifest["val"], weights=weights.get(name),
                          device=device, scaling=fuse["scaling"], batch=fuse["batch"], progress=progress)
        images[name], fusion_ms[name] = fused["images"], fused["fusion_ms_per_image"]
        image_key[name] = {"depends": [f"fuse/{name}"], "inputs": {}}
    for name, folder in methods.items():
        images[name], fusion_ms[name] = str(folder), None
        image_key[name] = {"depends": [], "inputs": {"images": Path(folder)}}
    return images, fusion_ms, image_key


def _detector_protocol(run: Run, config: Mapping, start_weights, *, device, workers: int, progress: bool,
                       log: Callable):
    """The settings of every method's detector run: from the warm-start detector (trained by its
    stage) when the config has one, else from the resolved starting weights (by content)."""
    protocol = dict(config["detect"])
    if config.get("warm_start"):
        warm = run.stage("warmstart", stages.warm_start,
                         settings={"warm_start": config["warm_start"], "detect": protocol, "device": device},
                         warm=config["warm_start"], protocol=protocol, device=device, workers=workers, progress=progress,
                         log=log)
        return {**protocol, "weights": warm["weights"], "warm_start": config["warm_start"]}, ["warmstart"], {}
    local = Path(start_weights) if start_weights and Path(start_weights).is_file() else None
    return {**protocol, "weights": start_weights}, [], {"detector_weights": local}
