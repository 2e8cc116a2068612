"""Commands of mmdrfuse.pipeline (see mmdrfuse/cli.py): ``detect``, ``pipeline``, ``demo``.

Options: those sections of mmdrfuse/cfg/default.yaml; each handler takes one keyword argument per key.
"""
from __future__ import annotations

from mmdrfuse.config import add_command


def detect_command(**options) -> int:
    from mmdrfuse.pipeline.detect import run_detect

    return run_detect(**options)


def pipeline_command(*, config_file, from_stage, out, executor, ray_address, quiet) -> int:
    from mmdrfuse.pipeline.run import DEFAULT_OUT, load_config, run_pipeline

    config = load_config(config_file)
    outcome = run_pipeline(config, out or config.get("out") or DEFAULT_OUT, force_from=from_stage, progress=not quiet,
                           executor=executor, address=ray_address)
    print(f"report: {outcome['report']}/report.md")
    return 0


def demo_command(**options) -> int:
    from mmdrfuse.pipeline.demo import run_demo

    return run_demo(**options)


def register(subparsers) -> None:
    """Add ``detect``, ``pipeline`` and ``demo``."""
    add_command(subparsers, "detect", section="detect", handler=detect_command,
                help="train a YOLO detector on each fusion method's images and compare them")
    add_command(subparsers, "pipeline", section="pipeline", handler=pipeline_command,
                help="run prepare, train, fuse, detect and report from one YAML config, with caching")
    add_command(subparsers, "demo", section="demo", handler=demo_command,
                help="the whole pipeline on synthetic data, 3 training seeds, sized for a small CPU (10 minutes or less on 2 cores)")
