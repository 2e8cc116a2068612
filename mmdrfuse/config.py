"""One place for defaults: ``mmdrfuse/cfg/default.yaml``, one section per command.

Every subcommand takes ``--config FILE``: a YAML mapping of option names (as on the command
line, dashes or underscores) that overrides the shipped defaults; explicit command-line flags
override both.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any, Dict

import yaml

DEFAULTS_FILE = Path(__file__).with_name("cfg") / "default.yaml"


@functools.lru_cache(maxsize=None)
def _all_defaults() -> Dict[str, Dict[str, Any]]:
    with open(DEFAULTS_FILE, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def defaults(section: str) -> Dict[str, Any]:
    """A copy of one section of the shipped defaults."""
    data = _all_defaults()
    if section not in data:
        raise KeyError(f"no section {section!r} in {DEFAULTS_FILE}")
    return dict(data[section])


def add_command(subparsers, name: str, *, help: str, **kwargs) -> argparse.ArgumentParser:
    """Add a leaf subcommand that accepts ``--config FILE``."""
    parser = subparsers.add_parser(name, help=help, description=help, **kwargs)
    parser.add_argument("--config", metavar="FILE", help="YAML file of option overrides")
    parser.set_defaults(_parser=parser)
    return parser


def load_overrides(path: str, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """Read a ``--config`` YAML and check every key is an option of ``parser``."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file not found: {file}")
    with open(file, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {file} must hold a mapping of option: value")
    known = {action.dest for action in parser._actions}
    overrides = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown option(s) in {file}: {', '.join(unknown)}")
    return overrides
