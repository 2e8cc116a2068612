"""The one caching scheme of ``pipeline``, ``detect`` and ``demo``: stage folders named by a key.

A stage writes into ``<run>/<stage>[-<item>]-<key>/`` and writes ``DONE`` (a JSON of its
outputs) last; a stage whose folder has ``DONE`` is skipped, so a re-run costs nothing and an
interrupted run continues. ``key`` is 12 hex digits of the BLAKE2b hash of

- the stage's settings (everything that changes its result),
- the keys of the stages it reads (a change upstream reruns everything downstream),
- the content of the files it reads from outside the run (images, annotations, weights): a
  BLAKE2b digest of their bytes, memoised in ``<run>/hashes.json`` by (path, size, mtime_ns) so
  a re-run reads no file it has hashed before,
- the versions of mmdrfuse, ultralytics and torch.

``--from STAGE`` forces a stage (every item of it) and those after it.

``Run.stage`` runs a stage in this process; stages that may run elsewhere (the detectors, one
per method and training seed, as tasks of mmdrfuse.pipeline.executor) are split in three:
``Run.plan`` (key, folder, done before?), ``run_in_folder`` (the task: body, then ``DONE``) and
``Run.record``.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from mmdrfuse import __version__
from mmdrfuse.errors import DataError
from mmdrfuse.files import write_text_atomic

DONE = "DONE"
HASHES = "hashes.json"
_CHUNK = 1 << 20
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def fingerprint(value) -> str:
    """12 hex digits of the BLAKE2b hash of ``value`` as canonical JSON."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()[:12]


@cache
def versions() -> Dict[str, Optional[str]]:
    """The versions of the code whose change can change a stage's result."""
    from importlib import metadata

    found: Dict[str, Optional[str]] = {"mmdrfuse": __version__}
    for package in ("ultralytics", "torch"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


class ContentHashes:
    """BLAKE2b digests of files and folders, memoised by (path, size, mtime_ns) in a JSON file."""

    def __init__(self, memo_file: Path):
        self.memo_file = Path(memo_file)
        self.memo: Dict[str, List] = {}
        if self.memo_file.is_file():
            try:
                self.memo = json.loads(self.memo_file.read_text())
            except ValueError:  # a damaged memo only costs re-hashing
                self.memo = {}
        self.changed = False

    def file(self, path: Path) -> str:
        """The digest of one file's bytes (read again only when its size or mtime changed)."""
        path = Path(path).resolve()
        try:
            stat = path.stat()
        except OSError as error:
            raise DataError(f"cannot read {path}: {error.strerror or error}") from None
        entry = self.memo.get(str(path))
        if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            return entry[2]
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(block)
        self.memo[str(path)] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]
        self.changed = True
        return digest.hexdigest()

    def tree(self, folder: Path, *, ignore_suffixes: Sequence[str] = (".cache",)) -> str:
        """The digest of every file under ``folder`` (relative names and contents)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"folder does not exist: {folder}")
        entries = [
            (str(path.relative_to(folder)), self.file(path))
            for path in sorted(folder.rglob("*"))
            if path.is_file() and path.suffix not in ignore_suffixes
        ]
        return fingerprint(entries)

    def path(self, path: Path) -> str:
        """A file's or a folder's digest."""
        return self.tree(path) if Path(path).is_dir() else self.file(path)

    def save(self) -> None:
        if self.changed:
            write_text_atomic(self.memo_file, json.dumps(self.memo) + "\n")
            self.changed = False


class Run:
    """The stage folders of one run directory, with the cache rule of the module docstring."""

    def __init__(self, out: Path, stages: Sequence[str], force_from: Optional[str] = None, log: Callable = print):
        if force_from is not None and force_from not in stages:
            raise DataError(f"--from must be one of {', '.join(stages)}, got {force_from!r}")
        self.out = Path(out)
        self.stages = tuple(stages)
        self.force = set(stages[stages.index(force_from):]) if force_from else set()
        self.log = log
        self.hashes = ContentHashes(self.out / HASHES)
        self.keys: Dict[str, str] = {}
        self.outputs: Dict[str, Dict] = {}
        self.ran: List[str] = []

    def digests(self, inputs: Mapping[str, Optional[Path]]) -> Dict[str, Optional[str]]:
        """``{label: content digest}`` of the files or folders read from outside the run."""
        return {label: (self.hashes.path(path) if path is not None else None) for label, path in inputs.items()}

    def plan(
        self,
        name: str,
        *,
        settings: Mapping,
        depends: Iterable[str] = (),
        inputs: Optional[Mapping[str, Optional[Path]]] = None,
        item: Optional[str] = None,
    ) -> StagePlan:
        """The key and folder of a stage, and its outputs when it is done (and not forced).

        ``depends`` names earlier stages (``name`` or ``name/item``) whose keys enter this one;
        ``inputs`` are files or folders outside the run whose content enters it. A forced stage's
        old folder is removed (a stage folder: this command made it)."""
        if name not in self.stages:
            raise ValueError(f"unknown stage {name!r}")
        if item is not None and not _PLAIN_NAME.match(item):
            raise DataError(f"method name {item!r} must be a plain name (letters, digits, '_', '.', '+', '-')")
        label = f"{name}/{item}" if item else name
        key = fingerprint({
            "stage": label, "settings": settings, "depends": {d: self.keys[d] for d in depends},
            "inputs": self.digests(inputs or {}), "versions": versions(),
        })  # fmt: skip
        self.hashes.save()
        self.keys[label] = key
        folder = self.out / (f"{name}-{item}-{key}" if item else f"{name}-{key}")
        done = folder / DONE
        if done.is_file() and name not in self.force:
            self.log(f"== {label}: done before ({folder.name}), skipped")
            self.outputs[label] = json.loads(done.read_text())
            return StagePlan(label, folder, self.outputs[label])
        if name in self.force and folder.exists():
            shutil.rmtree(folder)
        return StagePlan(label, folder, None)

    def record(self, plan: StagePlan, outputs: Dict) -> Dict:
        """Note the outputs of a stage that ``run_in_folder`` ran."""
        self.outputs[plan.label] = outputs
        self.ran.append(plan.label)
        self.log(f"== {plan.label}: finished in {outputs['seconds']:.1f} s")
        return outputs

    def stage(
        self,
        name: str,
        body: Callable[..., Dict],
        /,
        *,
        settings: Mapping,
        depends: Iterable[str] = (),
        inputs: Optional[Mapping[str, Optional[Path]]] = None,
        item: Optional[str] = None,
        **arguments,
    ) -> Dict:
        """``body(folder, **arguments) -> outputs`` unless its folder has ``DONE``; returns the
        outputs (``plan`` explains ``depends`` and ``inputs``)."""
        plan = self.plan(name, settings=settings, depends=depends, inputs=inputs, item=item)
        if plan.outputs is not None:
            return plan.outputs
        self.log(f"== {plan.label}: running into {plan.folder}")
        return self.record(plan, run_in_folder(plan.folder, body, arguments))


@dataclass(frozen=True)
class StagePlan:
    """A stage's label (``name`` or ``name/item``), folder, and outputs when it is done (else None)."""

    label: str
    folder: Path
    outputs: Optional[Dict]


def run_in_folder(folder: Path, body: Callable[..., Dict], arguments: Mapping) -> Dict:
    """``body(folder, **arguments)``, timed (``seconds``, ``cpu_seconds``), with ``DONE`` (its outputs
    as JSON) written last.

    A plain function of picklable arguments, so an executor may run it in another process."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    start, cpu = time.perf_counter(), time.process_time()
    outputs = body(folder, **arguments)
    outputs["seconds"] = round(time.perf_counter() - start, 3)
    # CPU seconds of every thread: on a shared machine, wall time grows with the load and this does not.
    outputs["cpu_seconds"] = round(time.process_time() - cpu, 3)
    write_text_atomic(folder / DONE, json.dumps(outputs, indent=2) + "\n")
    return outputs
