"""Helpers the tests import (``from helpers import ...``); fixtures live in conftest.py."""
from __future__ import annotations

import argparse
from pathlib import Path


def run_data_cli(argv):
    """Run a data command the way ``mmdrfuse`` does, but let its DataError propagate to the test."""
    from mmdrfuse.config import run_command
    from mmdrfuse.data import cli as data_cli

    parser = argparse.ArgumentParser(prog="mmdrfuse")
    data_cli.register(parser.add_subparsers(dest="command"))
    return run_command(parser.parse_args(argv))


def settings(section: str, **overrides):
    """The settings a library function of command ``section`` takes: the section's defaults in
    mmdrfuse/cfg/default.yaml (``mmdrfuse.config.defaults``), as the command line passes them,
    with ``overrides``; a key the section does not have is a test error, not a silent extra."""
    from mmdrfuse.config import defaults

    values = defaults(section)
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise KeyError(f"not settings of {section}: {', '.join(unknown)} (known: {', '.join(values)})")
    return {**values, **overrides}


def write_pairs(root, sizes, *, color_vi: bool = False, seed: int = 0):
    """Random same-named pairs ``root/ir/000.png``, ``root/vi/000.png``, ... of the given ``(h, w)``
    sizes: infrared gray, visible gray or (``color_vi``) BGR. Returns ``(ir_dir, vi_dir)``."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    ir_dir, vi_dir = Path(root) / "ir", Path(root) / "vi"
    ir_dir.mkdir(parents=True, exist_ok=True)
    vi_dir.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        assert cv2.imwrite(str(ir_dir / f"{i:03d}.png"), rng.integers(0, 256, (h, w), dtype=np.uint8))
        assert cv2.imwrite(str(vi_dir / f"{i:03d}.png"), rng.integers(0, 256, (h, w, 3) if color_vi else (h, w), dtype=np.uint8))
    return ir_dir, vi_dir


def validate_llvip(root, **overrides):
    """``mmdrfuse.data.llvip.validate`` called as ``mmdrfuse validate`` calls it, with that command's
    settings (default.yaml) and ``overrides`` (``split``, ``strict``, ``decode``, ``no_annotations``)."""
    from mmdrfuse.data.llvip import validate

    options = settings("validate", **overrides)
    return validate(root, options["split"], strict=options["strict"], annotations=not options["no_annotations"],
                    decode=options["decode"])


# Packages the bare GPU machine lacks: scripts/train_weights.py must run without them.
BLOCKED_ON_GPU_MACHINE = ("ultralytics", "pycocotools", "polars", "scipy", "skimage")
SITECUSTOMIZE = f"""
import sys

class _Missing:
    # A meta-path finder ahead of all others: these packages do not exist on the GPU machine.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED_ON_GPU_MACHINE!r}:
            raise ImportError(f"{{name}} is not installed on the GPU machine")
        return None

sys.meta_path.insert(0, _Missing())
"""


def tiny_llvip(root, pairs=3, size=(224, 160)):
    """An LLVIP-layout train split of ``pairs`` smooth random pairs (no annotations): enough to cut patches."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for modality in ("infrared", "visible"):
        (root / modality / "train").mkdir(parents=True)
    for index in range(pairs):
        for modality, cells in (("infrared", 4), ("visible", 12)):
            image = cv2.resize(rng.random((cells, cells)), size, interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(root / modality / "train" / f"0100{index:02d}.jpg"), np.clip(image * 255, 0, 255).astype(np.uint8))
    return root


# Tasks for the executor tests: top-level functions, so that spawned worker processes can import them.
def worker_identity(index):
    """(index, process id, torch threads) of the process that runs the task."""
    import os

    import torch

    return index, os.getpid(), torch.get_num_threads()


def fail_unpicklably(message):
    """Raise an error that cannot be pickled (it holds a lock)."""
    import threading

    error = RuntimeError(message)
    error.lock = threading.Lock()
    raise error


def exit_process(code):
    """End the worker process at once, as an out-of-memory kill would."""
    import os

    os._exit(code)


def write_pid_and_wait(folder, index):
    """Write this process's id to ``folder/<index>.pid``, then sleep (until killed)."""
    import os
    import time
    from pathlib import Path

    Path(folder, f"{index}.pid.tmp").write_text(str(os.getpid()))
    os.replace(Path(folder, f"{index}.pid.tmp"), Path(folder, f"{index}.pid"))
    time.sleep(120)
