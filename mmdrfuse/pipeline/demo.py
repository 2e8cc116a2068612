"""``mmdrfuse demo``: the whole pipeline on SYNTHETIC LLVIP-like scenes, sized for a small CPU.

The settings are in mmdrfuse/cfg/demo.yaml (``config``: a pipeline config; ``quick``: what
``--quick`` changes in it, for CI; the default run folders). Three epochs from random weights
learn nothing, so the demo first trains a warm-start detector on separate synthetic scenes
(the ``warm_start`` stage) and runs the 3-epoch protocol per method from it, as a user with
pretrained weights would.

The fusion networks (``student_weights`` in demo.yaml, ``--student-weights``): ``auto`` uses the
package's shipped student (``mmdrfuse/weights/student.pth``, and its ``teacher.pth`` where the
teacher is a method) when it exists and trains the CPU toy otherwise; ``shipped`` insists on the
shipped files; ``train`` always trains the toy; a path fuses with that student file. A given file
enters the cache keys by its content (the pipeline's ``weights`` of a network section) and its
training stages are skipped. The report says which student was used.
"""
from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import yaml

from mmdrfuse.errors import DataError
from mmdrfuse.files import write_text_atomic
from mmdrfuse.fusion import infer
from mmdrfuse.pipeline.config import networks_to_train
from mmdrfuse.pipeline.run import check_config, merge, run_pipeline

DEMO_FILE = Path(__file__).resolve().parents[1] / "cfg" / "demo.yaml"


@functools.cache
def _demo_settings() -> dict:
    return yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))


def demo_config(quick: bool = False) -> dict:
    """The demo's pipeline config (a fresh copy), with the ``--quick`` changes when ``quick``."""
    settings = _demo_settings()
    return merge(settings["config"], settings["quick"] if quick else {})


STUDENT_WEIGHTS = ("auto", "shipped", "train")  # or a path of a student weights file


def choose_networks(config: dict, choice: str) -> Tuple[dict, Dict[str, Optional[str]]]:
    """``config`` with the fusion networks ``choice`` selects (module docstring), and what was used:
    ``{"student": "shipped" | "file" | "trained", "weights": path or None, "teacher": path or None}``."""
    shipped = {kind: infer.default_weights(kind) for kind in ("student", "teacher")}
    if choice == "train" or (choice == "auto" and not shipped["student"].is_file()):
        return config, {"student": "trained", "weights": None, "teacher": None}
    if choice == "shipped" and not shipped["student"].is_file():
        raise DataError(f"student_weights: shipped, but the package ships no student ({shipped['student']} does not exist)")
    if choice in ("auto", "shipped"):
        student, source = shipped["student"], "shipped"
    else:
        student, source = Path(choice), "file"
        if not student.is_file():
            raise DataError(f"student_weights: {choice} is neither one of {', '.join(STUDENT_WEIGHTS)} nor a file")
    given = {"student": {"weights": str(student)}}
    teacher = None
    if "teacher" in config["fuse"]["methods"] and source == "shipped" and shipped["teacher"].is_file():
        teacher = str(shipped["teacher"])  # the teacher the shipped student was distilled from: no training at all
        given["teacher"] = {"weights": teacher}
    return merge(config, given), {"student": source, "weights": str(student), "teacher": teacher}


def describe_student(used: Dict[str, Optional[str]], config: dict) -> str:
    """One line for the report: which student the "student" method is."""
    if used["student"] == "trained":
        section = config.get("student") or {}
        steps = section.get("max_steps")
        if not steps and section.get("limit") and section.get("batch"):
            steps = section.get("epochs", 1) * math.ceil(section["limit"] / section["batch"])
        return (f"The student method is the demo-trained CPU toy ({steps or 'a few'} steps, "
                f"{section.get('perceptual', 'vgg19')} backbone), not a shipped student: it says the pipeline works, "
                f"not how MMDRFuse ranks.")
    what = "the package's shipped student" if used["student"] == "shipped" else "the given student file"
    trained = networks_to_train(check_config(config))
    return (f"The student method is {what} ({used['weights']}); "
            + (f"the demo trained only the {' and '.join(trained)} (a method of its own)." if trained
               else "the demo trained no fusion network."))


def _note_in_report(report_folder: Path, used: Dict[str, Optional[str]], sentence: str) -> None:
    """Say in the latest report (the copy this run wrote under ``out/report``) which student it used."""
    markdown = report_folder / "report.md"
    write_text_atomic(markdown, markdown.read_text(encoding="utf-8").rstrip("\n") + f"\n\n{sentence}\n")
    results_file = report_folder / "results.json"
    results = json.loads(results_file.read_text(encoding="utf-8"))
    results["student_weights"] = {**used, "sentence": sentence}
    write_text_atomic(results_file, json.dumps(results, indent=2) + "\n")


def run_demo(*, out, quick, from_stage, student_weights, quiet) -> int:
    settings = _demo_settings()
    out = Path(out or (settings["quick_out"] if quick else settings["out"]))
    config, used = choose_networks(demo_config(quick), student_weights or settings["student_weights"])
    start = time.perf_counter()
    outcome = run_pipeline(config, out, force_from=from_stage, progress=not quiet)
    seconds = time.perf_counter() - start
    report = Path(outcome["report"]) / "report.md"
    sentence = describe_student(used, config)
    _note_in_report(report.parent, used, sentence)
    results = json.loads((report.parent / "results.json").read_text())
    print(f"\ndemo finished in {seconds / 60:.1f} min (stages run: {', '.join(outcome['ran']) or 'none, all cached'})")
    print(f"- {sentence}")
    for sentence in results["sentences"]:  # computed from the paired intervals: they claim only what those support
        print(f"- {sentence}")
    print(f"report: {report}")
    return 0
