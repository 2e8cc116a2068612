"""A pipeline config (configs/llvip-paper.yaml), checked WHOLE before any stage runs.

Its sections reuse the schema of the commands they stand for (mmdrfuse/cfg/default.yaml):
``prepare.patches`` takes the settings of ``prepare patches``, ``prepare.subset`` the
``train``/``val``/``seed`` of ``prepare yolo`` (or ``manifest``: the exact ids of a
manifest.json), ``teacher``/``student`` those of ``train teacher|student`` (plus ``weights``:
use these instead of training), ``fuse`` and ``detect`` those of ``fuse`` and ``detect``,
``data.synthetic`` those of ``prepare synthetic``. Every
value is checked against its type; the defaults of the commands fill what a section leaves out.
``detect.seeds`` (``0,1,2`` or a YAML list) are the training seeds, separate from the subset's seed.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from mmdrfuse.config import Option, check_settings, defaults, read_yaml_mapping, schema
from mmdrfuse.detection.methods import parse_builtins
from mmdrfuse.detection.yolo_train import PROTOCOL_KEYS
from mmdrfuse.errors import DataError

SECTIONS = ("out", "device", "workers", "jobs", "data", "prepare", "teacher", "student", "fuse", "warm_start", "detect")
NETWORKS = ("teacher", "student")
SUBSET = ("train", "val", "seed")


def _option(key: str, spec: str) -> Option:
    types, *attributes = [part.strip() for part in spec.split(",")]
    return Option("pipeline config", key, None, tuple(t.strip() for t in types.split("|")), "",
                  **{attribute: True for attribute in attributes})


TOP = {
    "out": _option("out", "path, optional"),
    "device": schema("detect")["device"],
    "workers": schema("detect")["workers"],
    "jobs": schema("detect")["jobs"],
}
FUSE_EXTRA = {"methods": _option("methods", "list")}
NETWORK_EXTRA = {"weights": _option("weights", "path, optional")}
DETECT_EXTRA = {"lr0": _option("lr0", "float, optional")}
# The report's settings: they change the report, not a detector (no detector stage's key has them).
REPORT_KEYS = ("seeds", "bootstrap")
DETECT_KEYS = (*PROTOCOL_KEYS, *REPORT_KEYS)
SUBSET_EXTRA = {"manifest": _option("manifest", "path, optional")}
WARM_START = {
    "epochs": schema("detect")["epochs"], "batch": schema("detect")["batch"], "imgsz": schema("detect")["imgsz"],
    "model": schema("detect")["model"], "optimizer": schema("detect")["optimizer"], "seed": schema("detect")["seed"],
}


def merge(base: Mapping, override: Mapping) -> Dict:
    """Deep merge of two mappings (override wins; nested mappings are merged); neither is modified."""
    result = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def load_config(path) -> Dict:
    """Read and check a pipeline config file (one-line DataError naming it on any problem)."""
    return check_config(read_yaml_mapping(path, "pipeline config"), str(path))


def _mapping(config: Mapping, key: str, source: str, *, required: bool = False) -> Dict:
    value = config.get(key)
    if value is None:
        if required:
            raise DataError(f"{source}: section {key!r} is missing")
        return {}
    if not isinstance(value, dict):
        raise DataError(f"{source}: {key} must be a mapping, got {value!r}")
    return value


def _settings(section: str, values: Mapping, source: str, keys=None, extra=None) -> Dict:
    """``values`` checked against the (non command-line) keys of ``section`` (or only ``keys``)."""
    allowed = {k: o for k, o in schema(section).items() if not o.cli and (keys is None or k in keys)}
    return check_settings(section, values, source, options={**allowed, **(extra or {})})


def check_config(config: Mapping, source: str = "config") -> Dict:
    """The config with every value type-checked and the commands' defaults filled in; DataError
    (naming ``source`` and the key) on the first problem, before any work."""
    if not isinstance(config, Mapping):
        raise DataError(f"{source} must hold a mapping of sections")
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise DataError(f"unknown section(s) in {source}: {', '.join(unknown)} (known: {', '.join(sorted(SECTIONS))})")
    checked: Dict = {k: TOP[k].check(config[k], source) for k in TOP if k in config}
    if checked.get("jobs", 1) < 1:
        raise DataError(f"{source}: jobs must be at least 1, got {checked['jobs']}")

    data = _mapping(config, "data", source, required=True)
    if bool(data.get("root")) == bool(data.get("synthetic")):
        raise DataError(f"{source}: data needs exactly one of root (an LLVIP folder) or synthetic (generator settings)")
    extra = sorted(set(data) - {"root", "synthetic"})
    if extra:
        raise DataError(f"{source}: unknown key(s) in data: {', '.join(extra)}")
    if data.get("root"):
        checked["data"] = {"root": _option("root", "path").check(data["root"], f"{source}: data")}
    else:
        checked["data"] = {"synthetic": _settings("prepare_synthetic", _mapping(data, "synthetic", source),
                                                  f"{source}: data.synthetic")}

    fuse = _mapping(config, "fuse", source, required=True)
    if "methods" not in fuse:
        raise DataError(f"{source}: fuse.methods is missing (the built-in methods to compare)")
    checked["fuse"] = {**{k: defaults("fuse")[k] for k in ("scaling", "batch")},
                       **_settings("fuse", fuse, f"{source}: fuse", ("scaling", "batch"), FUSE_EXTRA)}
    parse_builtins(",".join(checked["fuse"]["methods"]))
    for kind in NETWORKS:
        if kind in config:
            checked[kind] = _settings(f"train_{kind}", _mapping(config, kind, source), f"{source}: {kind}",
                                      extra=NETWORK_EXTRA)

    prepare = _mapping(config, "prepare", source, required=True)
    extra = sorted(set(prepare) - {"patches", "subset"})
    if extra:
        raise DataError(f"{source}: unknown key(s) in prepare: {', '.join(extra)}")
    if "subset" not in prepare:
        raise DataError(f"{source}: prepare.subset is missing (train, val, seed: the detection subset)")
    subset = _settings("prepare_yolo", _mapping(prepare, "subset", source), f"{source}: prepare.subset", SUBSET,
                       SUBSET_EXTRA)
    checked["prepare"] = {"subset": {**{k: defaults("prepare_yolo")[k] for k in SUBSET}, **subset}}
    if networks_to_train(checked):
        if "patches" not in prepare:
            raise DataError(f"{source}: prepare.patches is missing (the training patches of the fusion networks)")
        patches = _settings("prepare_patches", _mapping(prepare, "patches", source), f"{source}: prepare.patches")
        checked["prepare"]["patches"] = {**defaults("prepare_patches"), **patches}

    if "warm_start" in config:
        warm = dict(_mapping(config, "warm_start", source))
        synthetic = _settings("prepare_synthetic", _mapping(warm, "synthetic", source, required=True),
                              f"{source}: warm_start.synthetic")
        ultralytics = _mapping(warm, "ultralytics", source)
        rest = {k: v for k, v in warm.items() if k not in ("synthetic", "ultralytics")}
        rest = check_settings("detect", rest, f"{source}: warm_start", options=WARM_START)
        if "epochs" not in rest:
            raise DataError(f"{source}: warm_start.epochs is missing")
        checked["warm_start"] = {"synthetic": synthetic, **rest, **({"ultralytics": ultralytics} if ultralytics else {})}

    detect = dict(_mapping(config, "detect", source, required=True))
    if isinstance(detect.get("seeds"), list) and all(type(s) is int for s in detect["seeds"]):
        detect["seeds"] = ",".join(map(str, detect["seeds"]))  # a YAML list [0, 1, 2] as the option's 0,1,2
    detect = _settings("detect", detect, f"{source}: detect", DETECT_KEYS, DETECT_EXTRA)
    checked["detect"] = {**{k: v for k, v in defaults("detect").items() if k in DETECT_KEYS}, **detect}
    parse_seeds(checked["detect"]["seeds"], f"{source}: detect.seeds")
    return checked


def parse_seeds(value, source: str = "--seeds") -> Optional[List[int]]:
    """``"0,1,2"`` (or one int) -> ``[0, 1, 2]``; None (or ``none``) -> None; DataError on
    anything else, and on a repeated seed (it would count one detector twice)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    try:
        seeds = [int(part) for part in str(value).split(",")]
    except ValueError:
        raise DataError(f"{source} must be comma-separated integers such as 0,1,2, got {value!r}") from None
    if len(set(seeds)) != len(seeds):
        raise DataError(f"{source} repeats a seed: {value!r}")
    return seeds


def training_seeds(detect: Mapping) -> List[int]:
    """The training seeds of a checked ``detect`` section: ``seeds``, else ``[seed]``."""
    return parse_seeds(detect.get("seeds")) or [int(detect["seed"])]


def networks_to_train(config: Mapping) -> list:
    """The fusion networks the fused methods need trained (in order): a network given by its
    weights is not trained; the student needs a teacher unless its own weights are given."""
    methods = config["fuse"]["methods"]
    given = {kind: bool((config.get(kind) or {}).get("weights")) for kind in NETWORKS}
    needed = []
    if ("teacher" in methods or ("student" in methods and not given["student"])) and not given["teacher"]:
        needed.append("teacher")
    if "student" in methods and not given["student"]:
        needed.append("student")
    return needed


def weights_path(config: Mapping, kind: str):
    """The given weights of a network section, or None."""
    weights = (config.get(kind) or {}).get("weights")
    return Path(weights) if weights else None
