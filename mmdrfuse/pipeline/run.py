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
import sys
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional

from mmdrfuse.detection.methods import NETWORK_METHODS
from mmdrfuse.detection.yolo_train import PROTOCOL_KEYS, scratch_warning
from mmdrfuse.files import atomic_directory
from mmdrfuse.pipeline import stages
from mmdrfuse.pipeline.cache import DONE, Run, run_in_folder
from mmdrfuse.pipeline.config import (
    REPORT_KEYS,
    check_config,
    load_config,
    merge,
    networks_to_train,
    training_seeds,
    weights_path,
)
from mmdrfuse.pipeline.executor import TasksFailed, run_tasks

STAGES = ("synthetic", "prepare", "teacher", "student", "fuse", "datasets", "warmstart", "detect", "report")
DEFAULT_OUT = "runs/pipeline"  # when neither --out nor the config's out is given
WARM_START_FALLBACKS = ("model", "batch", "imgsz")  # detect settings a warm_start section may leave out

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
                 force_from: Optional[str] = None, progress: bool = True, log: Callable = print,
                 executor: str = "local", address: Optional[str] = None) -> Dict:
    """Run every stage of ``config`` under ``out``; ``methods`` adds user image folders
    (``{name: folder}``, one image per id) to the comparison; the detectors (one per method and
    training seed) are tasks of ``executor`` (mmdrfuse.pipeline.executor). Returns ``{"report":
    folder, "ran": [stages], "keys": {...}}``."""
    config = check_config(config)
    methods = dict(methods or {})
    run = Run(out, STAGES, force_from, log)
    device, workers, jobs = config.get("device", "auto"), int(config.get("workers", 0)), int(config.get("jobs", 1))
    start_weights, allow_download = _detector_start(config)
    warning = None if config.get("warm_start") else scratch_warning(start_weights, config["detect"]["epochs"])
    if warning:
        print(f"warning: {warning}", file=sys.stderr)  # once, before any work (quiet or not)

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
    # A given manifest's ids replace the draw: its content enters the key, not its path or the draw's settings.
    given = {"manifest": Path(subset["manifest"])} if subset.get("manifest") else {}
    prepared = run.stage("prepare", stages.prepare,
                         settings={"patches": patches, "subset": {"manifest": "content"} if given else subset},
                         depends=data_depends, inputs={**data_inputs, **given}, root=root, patches=patches,
                         subset=subset, progress=progress, log=log)
    manifest = json.loads(Path(prepared["manifest"]).read_text())

    weights, weights_key = _network_weights(run, config, to_train, prepared, device=device, progress=progress, log=log)
    images, fusion_ms, image_key = _method_images(run, config, methods, root, manifest, weights, weights_key,
                                                  device=device, progress=progress, executor=executor,
                                                  address=address, log=log)

    datasets: Dict[str, str] = {}
    for name, folder in images.items():
        built = run.stage("datasets", stages.build_dataset, item=name, settings={},
                          depends=["prepare"] + image_key[name]["depends"], inputs=image_key[name]["inputs"],
                          name=name, root=root, images=folder, manifest=prepared["manifest"], progress=progress, log=log)
        datasets[name] = built["data_yaml"]

    protocol, detect_depends, detect_inputs = _detector_protocol(run, config, start_weights, device=device,
                                                                 workers=workers, progress=progress, log=log)

    seeds = training_seeds(config["detect"])
    runs, detectors = _detectors(run, datasets, protocol, seeds, detect_depends, detect_inputs, device=device,
                                 workers=workers, allow_download=allow_download, progress=progress, log=log,
                                 executor=executor, address=address, jobs=jobs)
    bootstrap = config["detect"]["bootstrap"]
    detector_protocol = {k: v for k, v in protocol.items() if k not in REPORT_KEYS}
    reported = run.stage("report", stages.make_report, settings={"device": device, "bootstrap": bootstrap},
                         depends=[label for labels in detectors.values() for label in labels]
                         + [f"fuse/{n}" for n in config["fuse"]["methods"]],
                         runs=runs, fusion_ms=fusion_ms, protocol={**detector_protocol, "device": device},
                         bootstrap=bootstrap, root=root, datasets=datasets,
                         detectors={name: [run.outputs[label]["detector"] for label in labels]
                                    for name, labels in detectors.items()},
                         manifest=manifest)
    report_folder = Path(reported["report"])
    # The latest report, where a user looks first, replaced as a whole.
    with atomic_directory(run.out / "report") as staging:
        for file in report_folder.iterdir():
            if file.name != DONE:
                shutil.copy2(file, staging / file.name)
    return {"report": str(run.out / "report"), "ran": run.ran, "keys": run.keys}


def _detectors(run: Run, datasets: Mapping[str, str], protocol: Mapping, seeds, depends, inputs, *, device,
               workers: int, allow_download: bool, progress: bool, log: Callable, executor: str,
               address: Optional[str], jobs: int):
    """One detector per method and training seed (stage ``detect/<method>-seed<s>``), those not done
    before as tasks of ``executor``. Returns ``{method: [result per seed]}`` and ``{method: [stage
    labels]}``; when tasks fail, TasksFailed names each one's method and seed after the others
    finished (they stay cached: a re-run retries only the failed ones)."""
    detector = {k: protocol[k] for k in (*PROTOCOL_KEYS, "warm_start") if k in protocol}
    labels: Dict[str, list] = {name: [] for name in datasets}
    pending, tasks = [], []
    for name, data_yaml in datasets.items():
        for seed in seeds:
            settings = {**detector, "seed": seed}
            plan = run.plan("detect", item=f"{name}-seed{seed}", settings={"protocol": settings, "device": device},
                            depends=[f"datasets/{name}"] + list(depends), inputs=inputs)
            labels[name].append(plan.label)
            if plan.outputs is None:
                pending.append((name, seed, plan))
                tasks.append({"folder": plan.folder, "body": stages.detect_method, "arguments": {
                    "name": name, "data_yaml": data_yaml, "protocol": settings, "device": device, "workers": workers,
                    # Runs side by side would interleave their progress bars: one bar of finished runs instead.
                    "allow_download": allow_download, "progress": progress and (jobs == 1 or executor != "local")}})
    if tasks:
        at_once = f", {jobs} at a time" if jobs > 1 and executor == "local" else ""
        log(f"== detect: {len(tasks)} detector(s) to train ({len(datasets)} method(s) x {len(seeds)} seed(s), "
            f"{len(datasets) * len(seeds) - len(tasks)} done before{at_once})")
    _run_tasks(run, [(f"{name} seed {seed}", plan) for name, seed, plan in pending], tasks, total=len(datasets) * len(seeds),
               what="detector run", executor=executor, address=address, jobs=jobs, log=log,
               progress="detectors" if progress and jobs > 1 and executor == "local" else None)
    runs = {name: [run.outputs[label]["result"] for label in labels[name]] for name in datasets}
    return runs, labels


def _run_tasks(run: Run, pending, tasks, *, total: int, what: str, executor: str, address: Optional[str],
               log: Callable, jobs: int = 1, progress: Optional[str] = None) -> None:
    """Run the planned stages ``pending`` (``[(description, plan)]``, one per task of ``tasks``) with
    ``executor`` and record each finished one; TasksFailed names every failed one after the others
    finished (they stay cached: a re-run retries only the failed ones)."""
    failed = []
    for (description, plan), outcome in zip(pending, run_tasks(run_in_folder, tasks, executor=executor, address=address,
                                                                      jobs=jobs, progress=progress)):
        if outcome.ok:
            run.record(plan, outcome.result)
        else:
            log(f"== {plan.label}: failed\n{outcome.trace}")
            failed.append(f"{description}: {type(outcome.error).__name__}: {outcome.error}")
    if failed:
        raise TasksFailed(f"{len(failed)} of {total} {what}(s) failed ({'; '.join(failed)}); "
                          f"the others finished and are cached: run again to retry only the failed ones")


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
                   weights: Mapping, weights_key: Mapping, *, device, progress: bool, executor: str,
                   address: Optional[str], log: Callable):
    """The image folder of every method (built-in ones fused by a stage each, the user's as they
    are), their fusion times, and how each enters its dataset's key."""
    images: Dict[str, str] = {}
    fusion_ms: Dict[str, Optional[float]] = {}
    image_key: Dict[str, Dict] = {}
    fuse = config["fuse"]
    plans, pending, tasks = {}, [], []
    for name in fuse["methods"]:
        network = weights_key.get(name, {"depends": [], "inputs": {}})
        settings = {"scaling": fuse["scaling"], "batch": fuse["batch"], "device": device} if name in NETWORK_METHODS else {}
        plans[name] = plan = run.plan("fuse", item=name, settings=settings, depends=["prepare"] + network["depends"],
                                      inputs=network["inputs"])
        if plan.outputs is None:
            pending.append((name, plan))
            tasks.append({"folder": plan.folder, "body": stages.fuse_method, "arguments": {
                "name": name, "root": root, "ids": manifest["train"] + manifest["val"], "weights": weights.get(name),
                "device": device, "scaling": fuse["scaling"], "batch": fuse["batch"], "progress": progress}})
    # Fusing many methods' large sets is as independent as the detectors: the same executor runs it.
    if tasks:
        log(f"== fuse: {len(tasks)} method(s) to fuse ({len(plans) - len(tasks)} done before)")
    _run_tasks(run, pending, tasks, total=len(plans), what="fusion", executor=executor, address=address, log=log)
    for name, plan in plans.items():
        fused = run.outputs[plan.label]
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
        used = {k: protocol[k] for k in WARM_START_FALLBACKS}  # the detect settings stages.warm_start reads
        warm = run.stage("warmstart", stages.warm_start,
                         settings={"warm_start": config["warm_start"], "detect": used, "device": device},
                         warm=config["warm_start"], protocol=protocol, device=device, workers=workers, progress=progress,
                         log=log)
        return {**protocol, "weights": warm["weights"], "warm_start": config["warm_start"]}, ["warmstart"], {}
    local = Path(start_weights) if start_weights and Path(start_weights).is_file() else None
    return {**protocol, "weights": start_weights}, [], {"detector_weights": local}
