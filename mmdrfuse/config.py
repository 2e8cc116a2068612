"""The schema of every command: ``mmdrfuse/cfg/default.yaml``, one section per command.

Each key of a section is one option of its command, written as::

    key: default          # (type[, attribute]...) help

in the style of ultralytics' ``cfg/default.yaml``. Types: ``int``, ``float`` (an int is
accepted), ``str``, ``path``, ``bool``, ``list`` (a repeatable option; a YAML list of strings),
and unions such as ``str | int``. Attributes:

- ``optional``: null is a valid value (on the command line: ``none`` or ``null`` for numbers);
- ``required``: the command needs a value, from the command line or a ``--config`` file;
- ``choices=a|b|c``, or ``choices=module:NAME`` for a constant of the code (imported only when
  a value is checked or the choices are shown, so ``--help`` of the top level stays quick);
- ``metavar=NAME``, ``flag=--name`` (the option's spelling when it is not ``--key``),
  ``positional``, ``negatable`` (a ``false`` flag that also has ``--no-key``);
- ``cli``: a key of the command line only (data to read, files to write, verbosity), left out
  of :func:`defaults`, which returns the settings a library function takes.

The argparse options are derived from this file (:func:`add_command`). Every subcommand takes
``--config FILE``: a YAML mapping of the same keys (dashes or underscores) whose values are
checked against the schema and override the defaults; explicit command-line flags override
both. Handlers receive keyword arguments, one per key of their section.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import yaml

from mmdrfuse.errors import DataError

DEFAULTS_FILE = Path(__file__).with_name("cfg") / "default.yaml"
TYPES = ("int", "float", "str", "path", "bool", "list")
_NULL_WORDS = ("none", "null")
_SECTION_LINE = re.compile(r"^(\w+):")
_KEY_LINE = re.compile(r"^  (\w+):[^#]*#\s*\(([^)]*)\)\s*(.*)$")


class LazyChoices:
    """The allowed values of an option, imported from the code on first use."""

    def __init__(self, spec: str):
        self.spec = spec

    @functools.cached_property
    def values(self) -> Tuple:
        if ":" not in self.spec:
            return tuple(self.spec.split("|"))
        module, name = self.spec.split(":")
        return tuple(getattr(importlib.import_module(module), name))

    def __contains__(self, value) -> bool:
        return value in self.values

    def __iter__(self) -> Iterator:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Option:
    """One key of a section of default.yaml, i.e. one command-line option."""

    section: str
    key: str
    default: Any
    types: Tuple[str, ...]
    help: str
    optional: bool = False
    required: bool = False
    positional: bool = False
    negatable: bool = False
    cli: bool = False
    flag: Optional[str] = None
    metavar: Optional[str] = None
    choices: Optional[LazyChoices] = field(default=None, compare=False)

    @property
    def option_string(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")

    def describe(self) -> str:
        words = {"int": "an integer", "float": "a number", "str": "a string", "path": "a path",
                 "bool": "true or false", "list": "a list of strings"}
        text = " or ".join(words[t] for t in self.types)
        return text + (" or null" if self.optional else "")

    def check(self, value: Any, source: str) -> Any:
        """``value`` when it has the schema's type (and is one of the choices); else DataError naming ``source``."""
        if value is None and self.optional:
            return None
        if not any(_has_type(value, kind) for kind in self.types):
            raise DataError(f"{source}: {self.key} must be {self.describe()}, got {value!r}")
        if self.choices is not None and value is not None and value not in self.choices:
            raise DataError(f"{source}: {self.key} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        return value


def _has_type(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, (int, float))
    if kind == "list":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return isinstance(value, str)


def _parse_option(section: str, key: str, default: Any, spec: str, help_text: str) -> Option:
    parts = [part.strip() for part in re.split(r",\s+", spec)]  # ", " between attributes: a metavar may hold a comma
    types = tuple(t.strip() for t in parts[0].split("|"))
    bad = [t for t in types if t not in TYPES]
    if bad:
        raise ValueError(f"{DEFAULTS_FILE}: {section}.{key}: unknown type {', '.join(bad)}")
    attributes: Dict[str, Any] = {}
    for part in parts[1:]:
        name, _, value = part.partition("=")
        if name in ("optional", "required", "positional", "negatable", "cli"):
            attributes[name] = True
        elif name in ("flag", "metavar"):
            attributes[name] = value
        elif name == "choices":
            attributes["choices"] = LazyChoices(value)
        else:
            raise ValueError(f"{DEFAULTS_FILE}: {section}.{key}: unknown attribute {name!r}")
    option = Option(section, key, default, types, help_text, **attributes)
    if default is None and not (option.optional or option.required or option.positional or "list" in types):
        raise ValueError(f"{DEFAULTS_FILE}: {section}.{key} defaults to null but is neither optional nor required")
    return option


@functools.cache
def _schema() -> Dict[str, Dict[str, Option]]:
    """Every section's options, read from the values and the ``# (type) help`` comments of default.yaml."""
    text = DEFAULTS_FILE.read_text(encoding="utf-8")
    values = yaml.safe_load(text) or {}
    comments: Dict[str, Dict[str, Tuple[str, str]]] = {}
    section = None
    for line in text.splitlines():
        if _SECTION_LINE.match(line):
            section = _SECTION_LINE.match(line).group(1)
            comments[section] = {}
        elif section and _KEY_LINE.match(line):
            key, spec, help_text = _KEY_LINE.match(line).groups()
            comments[section][key] = (spec, help_text.strip())
    schema: Dict[str, Dict[str, Option]] = {}
    for section, keys in values.items():
        schema[section] = {}
        for key, default in (keys or {}).items():
            if key not in comments.get(section, {}):
                raise ValueError(f"{DEFAULTS_FILE}: {section}.{key} has no '# (type) help' comment")
            schema[section][key] = _parse_option(section, key, default, *comments[section][key])
    return schema


def schema(section: str) -> Dict[str, Option]:
    """The options of one section (one command), in the file's order."""
    sections = _schema()
    if section not in sections:
        raise KeyError(f"no section {section!r} in {DEFAULTS_FILE}")
    return sections[section]


def sections() -> List[str]:
    return list(_schema())


def defaults(section: str) -> Dict[str, Any]:
    """The settings of one section with their defaults (the ``cli`` keys left out)."""
    return {key: option.default for key, option in schema(section).items() if not option.cli}


def check_settings(section: str, values: Mapping[str, Any], source: str, *,
                   options: Optional[Mapping[str, Option]] = None) -> Dict:
    """``values`` (keys with dashes or underscores) checked against the options of ``section``
    (or ``options``); DataError naming ``source`` on an unknown key or a value of the wrong type."""
    options = schema(section) if options is None else options
    checked = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key not in options:
            raise DataError(f"{source}: unknown option {raw_key!r} (known: {', '.join(options)})")
        checked[key] = options[key].check(value, source)
    return checked


# ---------------------------------------------------------------------------------------------
# the command line, derived from the schema


def _number(kind: Callable, optional: bool) -> Callable:
    def convert(text: str):
        if optional and text.lower() in _NULL_WORDS:
            return None
        return kind(text)

    convert.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return convert


def _help(option: Option) -> str:
    text = option.help.replace("%", "%%")
    if option.choices is not None:
        text += " (choices: %(choices)s)"
    if option.required:
        text += " (required)"
    elif option.default not in (None, False, []) and not option.positional:
        text += " (default: %(default)s)"
    return text


def _choices_metavar(option: Option) -> Optional[str]:
    """A literal list of choices is shown as argparse shows it ({a,b}); choices from the code as KEY,
    since listing them here would import the code (torch) for every command line."""
    if option.choices is None or ":" not in option.choices.spec:
        return None
    return option.key.upper()


def add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    """The argparse argument of one schema option."""
    kind = option.types[0]
    if option.positional:
        parser.add_argument(option.key, metavar=option.metavar, help=_help(option))
        return
    names = dict(dest=option.key, help=_help(option))
    if kind == "bool":
        negatable = option.default is True or option.negatable
        action = argparse.BooleanOptionalAction if negatable else "store_true"
        parser.add_argument(option.option_string, action=action, default=option.default, **names)
        return
    if kind == "list":
        parser.add_argument(option.option_string, action="append", default=option.default,
                            metavar=option.metavar, **names)
        return
    convert = {"int": int, "float": float}.get(kind)
    parser.add_argument(
        option.option_string, default=option.default,
        type=_number(convert, option.optional) if convert else None,
        choices=option.choices, metavar=option.metavar or _choices_metavar(option), **names,
    )  # fmt: skip


def add_command(subparsers, name: str, *, section: str, handler: Callable[..., int], help: str,
                **kwargs) -> argparse.ArgumentParser:
    """A leaf subcommand whose options are the keys of ``section``, plus ``--config FILE``;
    ``handler(**options)`` runs it (see :func:`run_command`)."""
    parser = subparsers.add_parser(name, help=help, description=help, **kwargs)
    parser.add_argument("--config", metavar="FILE", help="YAML file of option overrides (keys of this command's options)")
    for option in schema(section).values():
        add_option(parser, option)
    parser.set_defaults(_handler=handler, _section=section)
    return parser


def add_group(subparsers, name: str, *, help: str, dest: str, metavar: str) -> argparse._SubParsersAction:
    """A command with subcommands (``prepare``, ``train``); alone, it prints its help."""
    parser = subparsers.add_parser(name, help=help, description=help)
    parser.set_defaults(_handler=lambda: parser.print_help() or 2, _section=None)
    return parser.add_subparsers(dest=dest, metavar=metavar)


def run_command(args: argparse.Namespace) -> int:
    """Call the parsed command's handler with one keyword argument per key of its section,
    after checking that the required ones have a value."""
    if args._section is None:
        return int(args._handler() or 0)
    options = {key: getattr(args, key) for key in schema(args._section)}
    missing = [o.option_string for o in schema(args._section).values() if o.required and options[o.key] in (None, "")]
    if missing:
        raise DataError(f"missing required option(s): {', '.join(missing)} (on the command line or in the --config file)")
    return int(args._handler(**options) or 0)


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


def read_yaml_mapping(path, what: str = "config file") -> Dict:
    """The mapping in the YAML file at ``path``; one-line DataError naming the file when it is
    missing, not YAML, or not a mapping."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{what} not found: {file}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise DataError(f"{what} {file} is not valid YAML{where}: {reason}") from None
    except UnicodeDecodeError:
        raise DataError(f"{what} {file} is not a text file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(f"{what} {file} must hold a mapping of option: value")
    return data


def apply_config(parser: argparse.ArgumentParser, path: str) -> None:
    """Make the values of the YAML file at ``path``, checked against the command's schema, the
    defaults of ``parser``."""
    section = parser.get_default("_section")
    if section is None:
        raise DataError(f"--config {path}: give it after a command that takes options")
    parser.set_defaults(**check_settings(section, read_yaml_mapping(path), str(path)))
