"""The ``mmdrfuse`` console command: ``mmdrfuse COMMAND [SUBCOMMAND] [--option value ...]``.

Each subpackage registers its own commands (``register(subparsers)`` in its ``cli`` module),
whose options are derived from ``mmdrfuse/cfg/default.yaml`` (see mmdrfuse/config.py); every
handler takes keyword arguments, one per key of its section. Heavy imports (torch,
ultralytics) happen inside the handlers so ``--help`` is quick.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from typing import List, Optional

from mmdrfuse import __version__
from mmdrfuse.config import apply_config, config_path, find_leaf_parser, run_command
from mmdrfuse.errors import Terminated

# Each module has register(subparsers); one module per area keeps ownership clear.
COMMAND_MODULES = (
    "mmdrfuse.data.cli",  # prepare patches | yolo | synthetic, validate
    "mmdrfuse.fusion.cli",  # fuse, train teacher | student
    "mmdrfuse.metrics.cli",  # evaluate
    "mmdrfuse.fusion.bench",  # bench
    "mmdrfuse.fusion.export",  # export
    "mmdrfuse.pipeline.cli",  # detect, pipeline, demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmdrfuse", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mmdrfuse {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # SIGTERM (timeout, Slurm, docker stop) unwinds like Ctrl-C, so staging folders are removed.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _run(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(argv: List[str]) -> int:
    parser = build_parser()
    command = argv[0] if argv else None
    try:
        config = config_path(argv)
        if config:
            # Before parsing: the file's values become the defaults, which explicit flags override.
            apply_config(find_leaf_parser(parser, argv), config)
        args = parser.parse_args(argv)
        if not hasattr(args, "_handler"):
            find_leaf_parser(parser, argv).print_help()
            return 2
        return run_command(args)
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return 143 if terminated else 130
    except (ValueError, OSError, RuntimeError) as error:
        # Bad input is reported in one line naming the file; MMDRFUSE_DEBUG=1 shows the traceback.
        if os.environ.get("MMDRFUSE_DEBUG"):
            raise
        print(f"mmdrfuse {command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
