"""Ship the project's own MMDRFuse weights: measure the candidates of scripts/train_weights.py, pick one, package it.

    PYTHONPATH=$PWD python3 scripts/ship_weights.py --candidates DIR [--out mmdrfuse/weights]
        [--roadscene ../shared/datasets/RoadScene] [--mri-pet ../shared/datasets/MRI_PET]
        [--released ../shared/weights/official] [--overwrite]

* Measures, with the project's own ``fuse`` and ``evaluate`` code (the paper's protocol: gray
  inputs by BGR2GRAY, min-max output, the mmif convention, the 6 metrics of Table 4(c)/5(b);
  MRI-PET with PET as the infrared input and MRI as the visible one, both read as gray), on
  RoadScene and on MRI-PET: every student and teacher of ``DIR`` (each recipe there), the
  authors' released student and teacher, and the classical rules of mmdrfuse.fusion.classical.
* Picks the student by issue 10's rule (:func:`pick_student`) and ships it with the teacher
  it was distilled from.
* Writes into ``--out`` in one step (a staging sibling renamed into place: all files or none):
  ``student.pth`` and ``teacher.pth`` (float32 state dicts in torch's legacy format, every
  tensor a view of one storage: what :func:`mmdrfuse.fusion.networks.load_model` loads, and the
  smallest torch.save gives), ``weights.json`` (provenance, the sha256 of every shipped file, the
  rule's outcome), ``weights.md`` / ``weights.csv`` / ``evaluation.json`` (the measured table,
  the CPU named), ``student_losses.csv`` / ``teacher_losses.csv``, ``student.json`` /
  ``teacher.json`` (training metadata), ``patches.json`` and ``commands.txt`` copied from ``DIR``.
* An existing shipment in ``--out`` is replaced only with ``--overwrite``; a folder holding
  anything else is refused, and so is a ``--toy`` run as the package's own weights. A missing input file is named in one line (exit status 2).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shlex
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from mmdrfuse.config import defaults
from mmdrfuse.data.io import match_pairs, read_gray, write_image_atomic
from mmdrfuse.errors import DataError
from mmdrfuse.files import atomic_directory, read_marker
from mmdrfuse.fusion.classical import CLASSICAL_METHODS
from mmdrfuse.fusion.infer import fuse_folder
from mmdrfuse.fusion.networks import load_model
from mmdrfuse.metrics.evaluate import LOWER_IS_BETTER, PAPER_METRICS, evaluate_methods
from mmdrfuse.native import cpu_description

FORMAT = "mmdrfuse-shipped-weights/1"
COMMAND = "ship_weights"  # the .mmdrfuse.json marker's command: what may replace the folder
REPO = Path(__file__).resolve().parents[1]
SETS = {"RoadScene": ("ir", "vi"), "MRI-PET": ("PET", "MRI")}  # (infrared-like input, visible-like input)
REFERENCE = "released student"
NEED = 4  # metrics of 6 at least as good as the released student's, on each set
KINDS = ("student", "teacher")
# Every file of a shipment (pyproject.toml's package-data must cover each: tests/test_package_data.py).
FILES = ("student.pth", "teacher.pth", "weights.json", "weights.md", "weights.csv", "evaluation.json", "student.json",
         "teacher.json", "student_losses.csv", "teacher_losses.csv", "commands.txt", "patches.json")


def candidate_row(recipe: str, kind: str = "student") -> str:
    return f"{kind} ({recipe})"


def find_candidates(folder: Path) -> Dict[str, Dict[str, Path]]:
    """``{recipe: {"student": pth, "teacher": pth, "folder": DIR/recipe}}`` of a train_weights.py output."""
    summary = folder / "summary.json"
    if not summary.is_file():
        raise DataError(f"--candidates {folder}: no {summary.name} in it (not a finished output of scripts/train_weights.py)")
    recipes = json.loads(summary.read_text(encoding="utf-8")).get("recipes", {})
    if not recipes:
        raise DataError(f"{summary} lists no trained recipe")
    for name in ("commands.txt", "patches.json"):
        if not (folder / name).is_file():
            raise DataError(f"missing file of the candidates: {folder / name}")
    found = {}
    for recipe in sorted(recipes):
        paths = {"folder": folder / recipe}
        for kind in KINDS:
            paths[kind] = folder / recipe / kind / f"{kind}.pth"
        for needed in (paths["folder"] / "metadata.json", paths["student"], paths["teacher"],
                       *(folder / recipe / k / name for k in KINDS for name in (f"{k}.json", "losses.csv"))):  # fmt: skip
            if not needed.is_file():
                raise DataError(f"missing file of recipe {recipe}: {needed}")
        found[recipe] = paths
    return found


def better_or_equal(value: float, reference: float, metric: str) -> bool:
    return value <= reference if metric in LOWER_IS_BETTER else value >= reference


def pick_student(table: Mapping[str, Mapping[str, Mapping[str, float]]], recipes: Sequence[str], *,
                 metrics: Sequence[str] = PAPER_METRICS, need: int = NEED, reference: str = REFERENCE) -> Dict[str, Any]:
    """The student to ship by issue 10's rule, from ``table[set][row][metric]`` (mean scores).

    A recipe qualifies when its student is at least as good as ``reference`` on at least ``need``
    of ``metrics`` on every set. The pick is, in order: a qualifying recipe over one that does not;
    more (set, metric) cells at least as good; the larger mean signed relative gap
    sum((c - r) / |r|) / cells (sign turned for lower-is-better metrics); the earlier of ``recipes``.
    When none qualifies the best by the same order is picked and ``qualifies`` is False.
    Returns ``{"recipe", "qualifies", "sentence", "recipes": {recipe: {"qualifies", "at_least",
    "cells", "mean_relative_gap", "sets": {set: {"at_least": [...], "below": {metric: gap}, "gaps": {...}}}}}}``.
    """
    if not recipes:
        raise ValueError("pick_student needs at least one recipe")
    outcome: Dict[str, Dict[str, Any]] = {}
    for recipe in recipes:
        row = candidate_row(recipe)
        sets, relative = {}, []
        for name, rows in table.items():
            mine, ref = rows[row], rows[reference]
            gaps = {m: float(mine[m] - ref[m]) for m in metrics}
            good = [m for m in metrics if better_or_equal(mine[m], ref[m], m)]
            sets[name] = {"at_least": good, "gaps": gaps, "below": {m: gaps[m] for m in metrics if m not in good}}
            sign = {m: -1.0 if m in LOWER_IS_BETTER else 1.0 for m in metrics}
            relative += [sign[m] * gaps[m] / max(abs(ref[m]), 1e-12) for m in metrics]
        outcome[recipe] = {"qualifies": all(len(s["at_least"]) >= need for s in sets.values()),
                           "at_least": sum(len(s["at_least"]) for s in sets.values()), "cells": len(relative),
                           "mean_relative_gap": float(np.mean(relative)), "sets": sets}  # fmt: skip
    order = sorted(recipes, key=lambda r: (not outcome[r]["qualifies"], -outcome[r]["at_least"],
                                           -outcome[r]["mean_relative_gap"], list(recipes).index(r)))  # fmt: skip
    chosen = order[0]
    return {"recipe": chosen, "qualifies": outcome[chosen]["qualifies"], "need": need, "reference": reference,
            "sentence": describe(chosen, outcome, need, reference), "recipes": outcome}  # fmt: skip


def describe(chosen: str, outcome: Mapping[str, Any], need: int, reference: str) -> str:
    mine = outcome[chosen]
    counts = ", ".join(f"{len(s['at_least'])} of {len(s['gaps'])} on {name}" for name, s in mine["sets"].items())
    head = f"student ({chosen}) is at least as good as the {reference} on {counts}"
    below = "; ".join(f"{name}: " + ", ".join(f"{m} {gap:+.4g}" for m, gap in s["below"].items())
                      for name, s in mine["sets"].items() if s["below"])  # fmt: skip
    if mine["qualifies"]:
        return f"{head}: it meets the goal ({need} of 6 on every set)" + (f"; below it on {below}" if below else "")
    others = [r for r in outcome if r != chosen]
    return (f"NO candidate meets the goal ({need} of 6 metrics at least as good as the {reference} on every set); "
            f"shipped the best anyway: {head}; the measured gaps where it is below: {below}"
            + (f" (also measured: {', '.join(others)})" if others else ""))  # fmt: skip


def compact_state(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The state dict as float32 views of one contiguous storage (torch.save then writes one storage record)."""
    flat = torch.cat([v.detach().to("cpu", torch.float32).reshape(-1) for v in state.values()])
    out, offset = {}, 0
    for key, value in state.items():
        out[key] = flat[offset : offset + value.numel()].view(value.shape)
        offset += value.numel()
    return out


def _pickled_str(text: str) -> bytes:
    return b"X" + struct.pack("<I", len(text)) + text.encode()  # pickle protocol 2's BINUNICODE


def serialise(state: Mapping[str, torch.Tensor], *, legacy: bool = True, compact: bool = True) -> bytes:
    """``torch.save`` of ``state`` as float32; ``legacy``: the pre-zip format, whose storage keys
    (the storages' memory addresses) are renamed 0, 1, ...: with ``compact`` (one storage) equal
    weights give equal bytes (several storages are also written in the order of their addresses)."""
    buffer = io.BytesIO()
    plain = compact_state(state) if compact else {k: v.detach().cpu().float().clone() for k, v in state.items()}
    torch.save(plain, buffer, _use_new_zipfile_serialization=not legacy)
    data = buffer.getvalue()
    if legacy:
        keys = list(dict.fromkeys(str(v.untyped_storage()._cdata) for v in plain.values()))
        for index, key in enumerate(keys):
            # Each tensor names its storage once, and the list of storage keys once more.
            uses = sum(str(v.untyped_storage()._cdata) == key for v in plain.values()) + 1
            if data.count(_pickled_str(key)) != uses:
                raise RuntimeError(f"torch.save's legacy format changed: storage key {key} is not where expected")
            data = data.replace(_pickled_str(key), _pickled_str(str(index)))
    return data


def size_options(state: Mapping[str, torch.Tensor]) -> Dict[str, int]:
    """Bytes of each torch.save form of ``state`` (the shipped one is ``legacy_one_storage``)."""
    return {f"{'legacy' if legacy else 'zip'}_{'one_storage' if compact else 'per_tensor'}": len(serialise(state, legacy=legacy, compact=compact))
            for legacy in (False, True) for compact in (False, True)}  # fmt: skip


def fuse_rows(rows: Mapping[str, Any], ir_dir: Path, vi_dir: Path, work: Path) -> Dict[str, Path]:
    """Fuse the set of (ir_dir, vi_dir) with every row: ``(kind, weights)`` for a network, a rule name
    for a classical method. Returns ``{row: folder of <stem>.png}``."""
    folders = {}
    pairs, _ = match_pairs(ir_dir, vi_dir)
    for index, (row, how) in enumerate(rows.items()):
        folder = work / f"{index:02d}"
        if isinstance(how, tuple):
            kind, weights = how
            fuse_folder(**{**defaults("fuse"), "model": kind, "weights": weights, "device": "cpu"}, ir_dir=ir_dir,
                        vi_dir=vi_dir, out_dir=folder, progress=False)  # fmt: skip
        else:
            for stem, ir_path, vi_path in pairs:
                write_image_atomic(folder / f"{stem}.png", CLASSICAL_METHODS[how](read_gray(ir_path), read_gray(vi_path)))
        folders[row] = folder
    return folders


def measure(sets: Mapping[str, Path], rows: Mapping[str, Any], work: Path, log=print) -> Dict[str, Any]:
    """``{"table": {set: {row: {metric: mean}}}, "pairs": {set: n}, "seconds": {set: s}}``."""
    table, pairs, seconds = {}, {}, {}
    for name, root in sets.items():
        ir_name, vi_name = SETS[name]
        started = time.perf_counter()
        folders = fuse_rows(rows, root / ir_name, root / vi_name, work / name)
        scores = evaluate_methods(folders, root / ir_name, root / vi_name, metrics=PAPER_METRICS, progress=False, device="cpu")
        table[name] = {row: result["mean"] for row, result in scores["methods"].items()}
        pairs[name] = {row: result["n"] for row, result in scores["methods"].items()}
        seconds[name] = time.perf_counter() - started
        log(f"{name}: {len(rows)} rows on {next(iter(pairs[name].values()))} pairs in {seconds[name]:.1f} s")
    return {"table": table, "pairs": pairs, "seconds": seconds}


def host_cpu() -> str:
    return f"{cpu_description()} ({os.cpu_count()} logical CPUs)"


def markdown_table(measured: Mapping[str, Any], shipped: str, cpu: str, command: str, outcome: str) -> str:
    lines = ["# Measured: the shipped weights against the released ones and the classical rules", "",
             f"Measured on {cpu} with `{command}` ({time.strftime('%Y-%m-%d', time.gmtime())}): the project's "
             f"`fuse` (min-max output) and `evaluate` (mmif convention, `--metrics paper`); MRI-PET with PET as `--ir`, "
             f"MRI as `--vi`, both read as gray. The shipped rows are marked **shipped**.", "",
             f"The rule (at least as good as the released student on 4 of the 6 metrics on both sets): {outcome}.", ""]  # fmt: skip
    for name, rows in measured["table"].items():
        count = next(iter(measured["pairs"][name].values()))
        lines += [f"## {name} ({count} pairs)", "", "| method | " + " | ".join(PAPER_METRICS) + " |",
                  "| --- |" + " --- |" * len(PAPER_METRICS)]  # fmt: skip
        for row, values in rows.items():
            label = f"{row} **shipped**" if row in (candidate_row(shipped), candidate_row(shipped, "teacher")) else row
            lines.append(f"| {label} | " + " | ".join(f"{values[m]:.2f}" for m in PAPER_METRICS) + " |")
        lines.append("")
    return "\n".join(lines)


def csv_table(measured: Mapping[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["set", "method", "pairs", *PAPER_METRICS])
    for name, rows in measured["table"].items():
        for row, values in rows.items():
            writer.writerow([name, row, measured["pairs"][name][row], *(repr(float(values[m])) for m in PAPER_METRICS)])
    return buffer.getvalue()


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse ``out`` unless it is missing, empty, or (with ``overwrite``) an earlier shipment."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    marker = read_marker(out)
    if marker is None or marker.get("command") != COMMAND:
        raise DataError(f"--out {out} is not empty and not a shipment of scripts/ship_weights.py; nothing was changed")
    if not overwrite:
        raise DataError(f"--out {out} already holds shipped weights; pass --overwrite to replace them")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", required=True, help="an output folder of scripts/train_weights.py")
    parser.add_argument("--out", default=str(REPO / "mmdrfuse" / "weights"), help="where to ship (default: mmdrfuse/weights)")
    parser.add_argument("--roadscene", default=str(REPO.parent / "shared" / "datasets" / "RoadScene"), help="folder with ir/ and vi/")
    parser.add_argument("--mri-pet", default=str(REPO.parent / "shared" / "datasets" / "MRI_PET"), help="folder with PET/ and MRI/")
    parser.add_argument("--released", default=str(REPO.parent / "shared" / "weights" / "official"),
                        help="folder with the authors' student.model and teacher.model")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier shipment in --out")
    args = parser.parse_args(argv)
    try:
        return run(args, argv if argv is not None else sys.argv[1:])
    except (DataError, ValueError, FileNotFoundError) as error:
        print(f"ship_weights: {error}", file=sys.stderr, flush=True)
        return 2


def run(args, argv: List[str], log=print) -> int:
    started = time.perf_counter()
    candidates, out = Path(args.candidates), Path(args.out)
    found = find_candidates(candidates)
    toy = json.loads((candidates / "summary.json").read_text(encoding="utf-8")).get("toy")
    if toy and out.resolve() == (REPO / "mmdrfuse" / "weights").resolve():
        raise DataError(f"--candidates {candidates} is a --toy run: it is never shipped as the package's weights ({out})")
    check_out(out, args.overwrite)  # before minutes of measuring
    sets = {"RoadScene": Path(args.roadscene), "MRI-PET": Path(args.mri_pet)}
    for name, root in sets.items():
        for sub in SETS[name]:
            if not (root / sub).is_dir():
                raise DataError(f"{name}: missing folder {root / sub}")
    released = {kind: Path(args.released) / f"{kind}.model" for kind in KINDS}
    for path in released.values():
        if not path.is_file():
            raise DataError(f"missing released weights file: {path}")
    rows: Dict[str, Any] = {}
    for recipe, paths in found.items():
        rows.update({candidate_row(recipe, kind): (kind, paths[kind]) for kind in KINDS})
    rows.update({f"released {kind}": (kind, released[kind]) for kind in KINDS})
    rows.update({rule: rule for rule in CLASSICAL_METHODS})
    for kind, path in [how for how in rows.values() if isinstance(how, tuple)]:
        load_model(kind, path)  # a wrong or broken file is one line before any fusion
    command = shlex.join(["PYTHONPATH=$PWD", "python3", "scripts/ship_weights.py", *argv]).replace("'PYTHONPATH=$PWD'", "PYTHONPATH=$PWD")

    with tempfile.TemporaryDirectory(prefix="mmdrfuse-ship-") as scratch:
        measured = measure(sets, rows, Path(scratch), log=log)
    decision = pick_student(measured["table"], list(found))
    chosen = decision["recipe"]
    log(("" if decision["qualifies"] else "WARNING: ") + decision["sentence"])
    cpu = host_cpu()
    table_md = markdown_table(measured, chosen, cpu, command, decision["sentence"])

    source = found[chosen]
    metadata = json.loads((source["folder"] / "metadata.json").read_text(encoding="utf-8"))
    summary = json.loads((candidates / "summary.json").read_text(encoding="utf-8"))
    student_info = json.loads((source["folder"] / "student" / "student.json").read_text(encoding="utf-8"))
    if Path(student_info.get("teacher_weights") or "").name != "teacher.pth":
        raise DataError(f"{source['folder'] / 'student' / 'student.json'} does not name the teacher it was distilled from")
    sizes = {}
    with atomic_directory(out, command=COMMAND, settings={"candidates": str(candidates.resolve()), "recipe": chosen},
                          overwrite=args.overwrite) as staging:  # fmt: skip
        for kind in KINDS:
            state = torch.load(source[kind], map_location="cpu", weights_only=True)
            sizes[kind] = size_options(state)
            (staging / f"{kind}.pth").write_bytes(serialise(state))
            shipped = load_model(kind, staging / f"{kind}.pth").state_dict()  # what `mmdrfuse fuse` will read
            if not all(torch.equal(shipped[k], state[k].float()) for k in state):
                raise RuntimeError(f"{kind}.pth does not load as the candidate's weights")
            shutil.copyfile(source["folder"] / kind / "losses.csv", staging / f"{kind}_losses.csv")
            shutil.copyfile(source["folder"] / kind / f"{kind}.json", staging / f"{kind}.json")
        for name in ("commands.txt", "patches.json"):
            shutil.copyfile(candidates / name, staging / name)
        (staging / "weights.md").write_text(table_md, encoding="utf-8")
        (staging / "weights.csv").write_text(csv_table(measured), encoding="utf-8")
        evaluation = {"cpu": cpu, "command": command, "metrics": list(PAPER_METRICS), "convention": "mmif", **measured}
        (staging / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n", encoding="utf-8")
        files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in sorted(staging.iterdir()) if p.is_file()
                 and not p.name.startswith(".")}  # fmt: skip
        provenance = {
            "format": FORMAT, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "ship_command": command,
            "recipe": chosen, "train_command": metadata["command"], "equivalent_commands": metadata["equivalent_commands"],
            "seed": metadata["seed"], "patches_sha256": metadata["patches_sha256"], "patch_count": metadata["patch_count"],
            "toy": summary.get("toy"), "backbone": metadata["backbone"], "environment": metadata["environment"],
            "stage_seconds": {kind: metadata["stages"][kind]["seconds"] for kind in KINDS},
            "train_wall_seconds": summary.get("wall_seconds"), "candidates": str(candidates.resolve()),
            "rule": decision, "evaluation_cpu": cpu, "evaluation_seconds": measured["seconds"],
            "serialisation": {"shipped": "legacy_one_storage", "bytes": sizes,
                              "released_student_model_bytes": released["student"].stat().st_size},
            "files": files,
        }  # fmt: skip
        (staging / "weights.json").write_text(json.dumps(provenance, indent=2, default=str) + "\n", encoding="utf-8")
        written = sorted(p.name for p in staging.iterdir() if not p.name.startswith("."))
        if written != sorted(FILES):  # FILES is what pyproject.toml's package-data must cover
            raise RuntimeError(f"a shipment holds {written}, not the files of FILES {sorted(FILES)}")
    log(table_md)
    shipped = ", ".join(f"{kind}.pth {files[kind + '.pth']['bytes']} bytes" for kind in KINDS)
    log(f"shipped {chosen}: {shipped} -> {out} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
