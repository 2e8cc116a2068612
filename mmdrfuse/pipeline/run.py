"""The end-to-end pipeline: prepare -> train teacher -> train student -> fuse -> YOLO datasets
-> (warm start) -> detect -> report, driven by one YAML config (configs/llvip-paper.yaml).

Each stage writes into ``<run>/<stage>-<key>/`` where ``key`` is 12 hex digits of the hash
of the stage's settings and of the keys of the stages it reads, and writes ``DONE`` (a JSON
of its outputs) last. A stage whose folder has ``DONE`` is skipped, so a re-run costs nothing
and an interrupted run continues; changing a setting changes the key of that stage and of
every stage after it, which then run again. ``--from STAGE`` forces a stage and those after it.
"""
from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import yaml

from mmdrfuse import __version__
from mmdrfuse.detection.methods import make_method_images, parse_builtins, subset_pairs
from mmdrfuse.errors import DataError
from mmdrfuse.files import atomic_directory, write_text_atomic
from mmdrfuse.pipeline.compare import build_datasets, fingerprint, report, train_methods

STAGES = ("synthetic", "prepare", "teacher", "student", "fuse", "datasets", "warmstart", "detect", "report")
DONE = "DONE"
DEFAULT_OUT = "runs/pipeline"  # when neither --out nor the config's out is given


def load_config(path: Path) -> Dict:
    """Read a pipeline config and check its sections (see configs/llvip-paper.yaml)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pipeline config not found: {path}")
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(config, dict):
        raise DataError(f"pipeline config {path} must be a mapping")
    return check_config(config, str(path))


def check_config(config: Dict, source: str = "config") -> Dict:
    known = {"data", "prepare", "teacher", "student", "fuse", "warm_start", "detect", "device", "workers", "out"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise DataError(f"unknown section(s) in {source}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    data = config.get("data") or {}
    if bool(data.get("root")) == bool(data.get("synthetic")):
        raise DataError(f"{source}: data needs exactly one of root (an LLVIP folder) or synthetic (generator settings)")
    for section in ("prepare", "fuse", "detect"):
        if not isinstance(config.get(section), dict):
            raise DataError(f"{source}: section {section!r} is missing")
    parse_builtins(",".join(config["fuse"].get("methods", [])))
    return config


def merge(base: Dict, override: Dict) -> Dict:
    """Deep merge of two mappings (override wins; nested mappings are merged)."""
    result = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


class Run:
    """Stage folders of one run directory, with the cache rule of the module docstring."""

    def __init__(self, out: Path, force_from: Optional[str] = None, log: Callable = print):
        if force_from is not None and force_from not in STAGES:
            raise DataError(f"--from must be one of {', '.join(STAGES)}, got {force_from!r}")
        self.out = Path(out)
        self.force = set(STAGES[STAGES.index(force_from):]) if force_from else set()
        self.log = log
        self.keys: Dict[str, str] = {}
        self.outputs: Dict[str, Dict] = {}
        self.ran: List[str] = []

    def stage(self, name: str, settings: Dict, depends: List[str], body: Callable[[Path], Dict]) -> Dict:
        """Run ``body(folder) -> outputs`` unless ``<name>-<key>/DONE`` exists; returns the outputs."""
        key = fingerprint({"stage": name, "settings": settings, "depends": [self.keys[d] for d in depends], "version": __version__})
        self.keys[name] = key
        folder = self.out / f"{name}-{key}"
        done = folder / DONE
        if done.is_file() and name not in self.force:
            self.log(f"== {name}: done before ({folder.name}), skipped")
            self.outputs[name] = json.loads(done.read_text())
            return self.outputs[name]
        if name in self.force and folder.exists():
            shutil.rmtree(folder)
        self.log(f"== {name}: running into {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        outputs = body(folder)
        outputs["seconds"] = round(time.perf_counter() - start, 3)
        write_text_atomic(done, json.dumps(outputs, indent=2) + "\n")
        self.outputs[name] = outputs
        self.ran.append(name)
        self.log(f"== {name}: finished in {outputs['seconds']:.1f} s")
        return outputs


def _fusion_stages_needed(config: Dict) -> List[str]:
    """The network training stages the fused methods need; the student needs a teacher unless its weights are given."""
    methods = config["fuse"]["methods"]
    student_given = bool((config.get("student") or {}).get("weights"))
    stages = ["teacher"] if "teacher" in methods or ("student" in methods and not student_given) else []
    return stages + (["student"] if "student" in methods else [])


def run_pipeline(config: Dict, out: Path, *, force_from: Optional[str] = None, progress: bool = True, log: Callable = print) -> Dict:
    """Run every stage of ``config`` under ``out``; returns ``{"report": folder, "ran": [stages], "keys": {...}}``."""
    config = check_config(config)
    run = Run(out, force_from, log)
    device, workers = config.get("device", "auto"), int(config.get("workers", 0))
    methods = list(config["fuse"]["methods"])
    network_stages = _fusion_stages_needed(config)
    start_weights = None
    if not config.get("warm_start"):
        from mmdrfuse.detection.yolo_offline import resolve_weights

        # Checked first: missing detector weights on an offline machine must stop the run before hours of work.
        start_weights = resolve_weights(config["detect"].get("weights"))

    data = config["data"]
    if data.get("synthetic"):
        def make_synthetic(folder: Path) -> Dict:
            from mmdrfuse.data.synthetic import generate

            return {"root": str(generate(folder / "llvip", progress=progress, **data["synthetic"]))}

        root = Path(run.stage("synthetic", data["synthetic"], [], make_synthetic)["root"])
        data_stage = ["synthetic"]
    else:
        root = Path(data["root"])
        run.keys["data"] = fingerprint(str(root.resolve()))
        data_stage = ["data"]

    def prepare(folder: Path) -> Dict:
        from mmdrfuse.data.patches import prepare_patches
        from mmdrfuse.data.yolo import select_subset

        outputs = {}
        if network_stages:
            patches = config["prepare"]["patches"]
            outputs["patches"] = str(prepare_patches(root, out=folder / "patches", progress=progress, log=log, **patches))
        manifest = select_subset(root, **config["prepare"]["subset"])
        write_text_atomic(folder / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        outputs["manifest"] = str(folder / "manifest.json")
        return outputs

    prepared = run.stage("prepare", config["prepare"], data_stage, prepare)
    manifest = json.loads(Path(prepared["manifest"]).read_text())

    fusion_weights: Dict[str, str] = {}
    for kind in network_stages:
        section = dict(config.get(kind) or {})
        depends = ["prepare"] + (["teacher"] if kind == "student" and "teacher" in network_stages else [])

        def train(folder: Path, kind=kind, section=section) -> Dict:
            if section.get("weights"):  # given weights (e.g. the released ones): nothing to train
                return {"weights": str(Path(section["weights"]).resolve())}
            from mmdrfuse.fusion.train import RESUME_FILE, train_model

            teacher = fusion_weights.get("teacher") if kind == "student" else None
            # An interrupted training left its resume state here: continue it rather than start over.
            resume = (folder / RESUME_FILE).exists()
            settings = {"device": device, **section, "resume": resume}  # a section's own device wins
            weights = train_model(kind, patches=prepared["patches"], out_dir=folder, teacher_weights=teacher,
                                  progress=progress, log=log, **settings)
            return {"weights": str(weights)}

        fusion_weights[kind] = run.stage(kind, section, depends, train)["weights"]

    def fuse(folder: Path) -> Dict:
        pairs = subset_pairs(root, manifest["train"] + manifest["val"])
        timings, images = {}, {}
        for name in methods:
            images[name] = str(folder / name)
            timings[name] = make_method_images(
                name, pairs, folder / name, weights=fusion_weights.get(name), device=device,
                scaling=config["fuse"].get("scaling", "minmax"), batch=int(config["fuse"].get("batch", 8)), progress=progress,
            )
        return {"images": images, "fusion_ms_per_image": timings}

    fused = run.stage("fuse", config["fuse"], ["prepare"] + network_stages, fuse)

    def datasets(folder: Path) -> Dict:
        built = build_datasets(root, {n: Path(p) for n, p in fused["images"].items()}, Path(prepared["manifest"]),
                               folder, progress=progress, log=log)
        return {"datasets": {n: str(p) for n, p in built.items()}}

    built = run.stage("datasets", {}, ["fuse"], datasets)["datasets"]

    protocol = {k: config["detect"][k] for k in ("model", "weights", "epochs", "batch", "optimizer", "imgsz", "seed") if k in config["detect"]}
    if config["detect"].get("lr0") is not None:
        protocol["lr0"] = config["detect"]["lr0"]
    detect_depends = ["datasets"]
    if config.get("warm_start"):
        warm = run.stage("warmstart", {"warm_start": config["warm_start"], "detect": protocol}, [],
                         lambda folder: warm_start(folder, config["warm_start"], protocol, device=device,
                                                   workers=workers, progress=progress, log=log))
        protocol = {**protocol, "weights": warm["weights"], "warm_start": config["warm_start"]}
        detect_depends.append("warmstart")
    else:
        protocol["weights"] = start_weights
    allow_download = start_weights is not None and not Path(start_weights).is_file()

    def detect(folder: Path) -> Dict:
        results = train_methods({n: Path(p) for n, p in built.items()}, folder, protocol, device=device, workers=workers,
                                allow_download=allow_download, quiet=not progress, log=log)
        return {"results": results}

    results = run.stage("detect", protocol, detect_depends, detect)["results"]

    def make_report(folder: Path) -> Dict:
        report(folder, results, fused["fusion_ms_per_image"], {**protocol, "device": device},
               root=root, datasets={n: Path(p) for n, p in built.items()},
               detector_dir=Path(run.out / f"detect-{run.keys['detect']}"), manifest=manifest)
        return {"report": str(folder)}

    report_folder = Path(run.stage("report", {}, ["detect"], make_report)["report"])
    # The latest report, where a user looks first, replaced as a whole.
    with atomic_directory(run.out / "report") as staging:
        for file in report_folder.iterdir():
            if file.name != DONE:
                shutil.copy2(file, staging / file.name)
    return {"report": str(run.out / "report"), "ran": run.ran, "keys": run.keys}


def warm_start(folder: Path, settings: Dict, protocol: Dict, *, device: str, workers: int, progress: bool, log: Callable) -> Dict:
    """A detector trained on separate synthetic scenes, shown half as infrared and half as visible,
    for the per-method runs to start from, as a user would start from pretrained weights. The
    scenes have every pedestrian visible in both modalities so no label asks for the invisible."""
    from mmdrfuse.data.synthetic import generate
    from mmdrfuse.data.yolo import build_yolo_dataset, select_subset
    from mmdrfuse.detection.yolo_train import train_detector

    root = generate(folder / "llvip", progress=progress, **settings["synthetic"])
    manifest = select_subset(root, train=settings["synthetic"]["train"], val=settings["synthetic"]["test"], seed=0)
    write_text_atomic(folder / "manifest.json", json.dumps(manifest) + "\n")
    pairs = subset_pairs(root, manifest["train"] + manifest["val"])
    for index, pair in enumerate(pairs):
        make_method_images("infrared" if index % 2 == 0 else "visible", [pair], folder / "mixture", progress=False)
    data_yaml = build_yolo_dataset(root, folder / "mixture", folder / "dataset", manifest=folder / "manifest.json",
                                   progress=progress, log=log)
    result = train_detector(
        data_yaml, folder / "detector", model=settings.get("model", protocol["model"]), weights=None,
        epochs=int(settings["epochs"]), batch=int(settings.get("batch", protocol["batch"])),
        imgsz=int(settings.get("imgsz", protocol["imgsz"])), optimizer=settings.get("optimizer", "SGD"),
        seed=int(settings.get("seed", 0)), device=device, workers=workers, extra=settings.get("ultralytics"), quiet=not progress,
    )
    log(f"warm start: mAP@.5:.95 {result['map50_95']:.3f}, mAP@.5 {result['map50']:.3f} on its own validation images")
    return {"weights": result["weights"], "map50_95": result["map50_95"], "map50": result["map50"]}
