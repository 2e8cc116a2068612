"""``mmdrfuse demo``: the whole pipeline on SYNTHETIC LLVIP-like scenes, sized for a small CPU.

The settings are the ``demo`` section of mmdrfuse/cfg/default.yaml (``config``: a pipeline
config; ``quick``: what ``--quick`` changes in it, for CI). Three epochs from random weights
learn nothing, so the demo first trains a warm-start detector on separate synthetic scenes
(the ``warm_start`` stage) and runs the 3-epoch protocol per method from it, as a user with
pretrained weights would.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from mmdrfuse.config import defaults
from mmdrfuse.detection.pipeline import merge, run_pipeline
from mmdrfuse.detection.report import fused_vs_single_sentence


def demo_config(quick: bool = False) -> dict:
    section = defaults("demo")
    return merge(section["config"], section["quick"]) if quick else section["config"]


def run_demo(args) -> int:
    section = defaults("demo")
    out = Path(args.out or (section["quick_out"] if args.quick else section["out"]))
    start = time.perf_counter()
    outcome = run_pipeline(demo_config(args.quick), out, force_from=args.from_stage, progress=not args.quiet)
    seconds = time.perf_counter() - start
    report = Path(outcome["report"]) / "report.md"
    results = json.loads((report.parent / "results.json").read_text())
    summary = fused_vs_single_sentence(results["methods"])
    print(f"\ndemo finished in {seconds / 60:.1f} min (stages run: {', '.join(outcome['ran']) or 'none, all cached'})")
    print(summary)
    print(f"report: {report}")
    return 0
