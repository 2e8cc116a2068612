"""``mmdrfuse demo``: the whole pipeline on SYNTHETIC LLVIP-like scenes, sized for a small CPU.

The settings are in mmdrfuse/cfg/demo.yaml (``config``: a pipeline config; ``quick``: what
``--quick`` changes in it, for CI; the default run folders). Three epochs from random weights
learn nothing, so the demo first trains a warm-start detector on separate synthetic scenes
(the ``warm_start`` stage) and runs the 3-epoch protocol per method from it, as a user with
pretrained weights would.
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import yaml

from mmdrfuse.pipeline.run import merge, run_pipeline

DEMO_FILE = Path(__file__).resolve().parents[1] / "cfg" / "demo.yaml"


@functools.cache
def _demo_settings() -> dict:
    return yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))


def demo_config(quick: bool = False) -> dict:
    """The demo's pipeline config (a fresh copy), with the ``--quick`` changes when ``quick``."""
    settings = _demo_settings()
    return merge(settings["config"], settings["quick"] if quick else {})


def run_demo(*, out, quick, from_stage, quiet) -> int:
    settings = _demo_settings()
    out = Path(out or (settings["quick_out"] if quick else settings["out"]))
    start = time.perf_counter()
    outcome = run_pipeline(demo_config(quick), out, force_from=from_stage, progress=not quiet)
    seconds = time.perf_counter() - start
    report = Path(outcome["report"]) / "report.md"
    results = json.loads((report.parent / "results.json").read_text())
    print(f"\ndemo finished in {seconds / 60:.1f} min (stages run: {', '.join(outcome['ran']) or 'none, all cached'})")
    for sentence in results["sentences"]:  # computed from the paired intervals: they claim only what those support
        print(f"- {sentence}")
    print(f"report: {report}")
    return 0
