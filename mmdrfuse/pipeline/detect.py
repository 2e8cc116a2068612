"""``mmdrfuse detect``: fuse LLVIP with each method, train one YOLO detector per method on the
same subset of ids, and compare them (the paper's section 4.5 and Figure 8).

It is the pipeline (mmdrfuse.pipeline.run) without its training stages: the subset is drawn
once (``prepare``), the built-in methods are fused (``fuse-<method>-<key>/``; the networks
from ``--student-weights``/``--teacher-weights``), the user's ``--method NAME=DIR`` folders
are used as they are, and every method gets its YOLO dataset, detector and row in the report
(``<out>/report/``). Every stage is cached by content, so re-running continues where it stopped
and changing one method's images reruns that method only. ``--seeds 0,1,2`` trains one detector
per method and seed (a task each, mmdrfuse.pipeline.executor); ``--manifest FILE`` reuses the
exact ids of an earlier run (its ``report/manifest.json``, which also lists every skipped id).
"""
from __future__ import annotations

from pathlib import Path

from mmdrfuse.data.llvip import check_root
from mmdrfuse.detection.methods import NETWORK_METHODS, parse_builtins, parse_method
from mmdrfuse.errors import DataError
from mmdrfuse.fusion.infer import default_weights
from mmdrfuse.pipeline.run import run_pipeline


def detect_config(*, root, builtins, model, weights, epochs, batch, optimizer, imgsz, device, seed, seeds, train,
                  val, manifest, workers, jobs, network_weights, close_mosaic, warmup_epochs, mosaic, amp, bootstrap) -> dict:
    """The pipeline config of a ``detect`` command line: ``seed`` draws the subset (unless
    ``manifest`` gives its ids) and is the training seed unless ``seeds`` are given."""
    subset = {"train": train, "val": val, "seed": seed, **({"manifest": str(manifest)} if manifest else {})}
    config = {
        "data": {"root": str(root)},
        "device": device,
        "workers": workers,
        "jobs": jobs,
        "prepare": {"subset": subset},
        "fuse": {"methods": list(builtins)},
        "detect": {"model": model, "weights": weights, "epochs": epochs, "batch": batch, "optimizer": optimizer,
                   "imgsz": imgsz, "seed": seed, "seeds": seeds, "close_mosaic": close_mosaic,
                   "warmup_epochs": warmup_epochs, "mosaic": mosaic, "amp": amp, "bootstrap": bootstrap},
    }
    for kind, path in network_weights.items():
        config[kind] = {"weights": str(path)}
    return config


def run_detect(*, root, out, method, builtin, student_weights, teacher_weights, executor, ray_address, quiet,
               **protocol) -> int:
    root = check_root(root)
    user_methods = dict(parse_method(text) for text in method or [])
    builtins = parse_builtins(builtin)
    clash = sorted(set(user_methods) & set(builtins))
    if clash:
        raise DataError(f"method name(s) given both as --method and --builtin: {', '.join(clash)}")
    if not user_methods and not builtins:
        raise DataError("no method to compare: give --method NAME=DIR and/or --builtin NAMES")
    given = {"student": student_weights, "teacher": teacher_weights}
    network_weights = {}
    for kind in NETWORK_METHODS:
        if kind in builtins:
            if given[kind] and not Path(given[kind]).is_file():
                raise DataError(f"--{kind}-weights file does not exist: {given[kind]}")
            weights = Path(given[kind]) if given[kind] else default_weights(kind)
            if not weights.is_file():
                raise DataError(f"built-in method {kind!r} needs --{kind}-weights PATH: the package ships no {kind} "
                                f"weights yet (expected {weights})")
            network_weights[kind] = weights  # its content enters the fusion stage's key
    if protocol["manifest"] and not Path(protocol["manifest"]).is_file():
        raise DataError(f"--manifest file does not exist: {protocol['manifest']}")
    config = detect_config(root=root, builtins=builtins, network_weights=network_weights, **protocol)
    outcome = run_pipeline(config, Path(out), methods=user_methods, progress=not quiet,
                           log=(lambda *a, **k: None) if quiet else print, executor=executor, address=ray_address)
    print(f"report: {outcome['report']}/report.md")
    return 0
