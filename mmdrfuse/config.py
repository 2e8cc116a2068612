"""One place for defaults: ``mmdrfuse/cfg/default.yaml``, one section per command.

Every subcommand takes ``--config FILE``: a YAML mapping of option names (as on the command
line, dashes or underscores) that overrides the shipped defaults; explicit command-line flags
override both. A config file may also supply options that are otherwise required, and its
values are checked against an option's choices like typed ones.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

DEFAULTS_FILE = Path(__file__).with_name("cfg") / "default.yaml"


@functools.cache
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
    return parser


def find_leaf_parser(parser: argparse.ArgumentParser, argv: List[str]) -> argparse.ArgumentParser:
    """The (sub)command parser that ``argv`` selects, found by walking the subcommand names."""
    for token in argv:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None:
            break
        if token in sub.choices:
            parser = sub.choices[token]
    return parser


def config_path(argv: List[str]) -> Optional[str]:
    """The value of ``--config FILE`` / ``--config=FILE`` in ``argv``, if any."""
    for i, token in enumerate(argv):
        if token == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith("--config="):
            return token.split("=", 1)[1]
    return None


def apply_config(parser: argparse.ArgumentParser, path: str) -> None:
    """Make the values of the YAML file at ``path`` the defaults of ``parser``; options they
    supply are no longer required on the command line."""
    overrides = load_overrides(path, parser)
    for action in parser._actions:
        if action.dest in overrides:
            action.required = False
    parser.set_defaults(**overrides)


def load_overrides(path: str, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """Read a ``--config`` YAML; check every key is an option of ``parser`` and every value is
    one of the option's choices, where it has them."""
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
    for action in parser._actions:
        value = overrides.get(action.dest)
        if action.choices is not None and action.dest in overrides and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise ValueError(f"{file}: {action.dest} must be one of {choices}, got {value!r}")
    return overrides
