"""scripts/ship_weights.py: the picking rule on hand-made tables, and a shipment of the toy candidates
of scripts/train_weights.py (the session's toy_weights run) measured on small synthetic stand-ins for
RoadScene and MRI-PET, so nothing here needs ../shared."""
from __future__ import annotations

import importlib.util
import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO

from mmdrfuse.data.io import read_gray
from mmdrfuse.fusion.infer import fuse_arrays, load_fusion_model
from mmdrfuse.fusion.networks import build_model
from mmdrfuse.fusion.scaling import to_uint8
from mmdrfuse.metrics import PAPER_METRICS, evaluate_pair


def load_script():
    spec = importlib.util.spec_from_file_location("ship_weights", REPO / "scripts" / "ship_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ship = load_script()
REF = {"SD": 40.0, "SCD": 1.5, "VIF": 0.6, "Qabf": 0.5, "SSIM": 0.9, "CC": 0.6}


def row(better: int, *, by: float = 0.01) -> dict:
    """A student row at least as good as REF on its first ``better`` metrics (``by`` relative) and below on the rest."""
    return {m: REF[m] * (1 + by if i < better else 1 - by) for i, m in enumerate(PAPER_METRICS)}


def table(**recipes) -> dict:
    """``recipe=(RoadScene row, MRI-PET row)`` -> the table pick_student reads."""
    return {name: {ship.REFERENCE: dict(REF), **{f"student ({r})": rows[i] for r, rows in recipes.items()}}
            for i, name in enumerate(("RoadScene", "MRI-PET"))}  # fmt: skip


def test_a_recipe_must_reach_four_of_six_on_both_sets_before_more_wins_count():
    # release is ahead on more cells (6 + 3 = 9 against 4 + 4 = 8) but only 3 of 6 on MRI-PET.
    decision = ship.pick_student(table(paper=(row(4), row(4)), release=(row(6), row(3))), ["paper", "release"])
    assert decision["recipe"] == "paper" and decision["qualifies"]
    assert decision["recipes"]["release"]["qualifies"] is False and decision["recipes"]["release"]["at_least"] == 9
    assert decision["recipes"]["paper"]["sets"]["MRI-PET"]["below"].keys() == {"SSIM", "CC"}
    assert "meets the goal" in decision["sentence"]


def test_among_qualifying_recipes_more_metrics_then_the_larger_gap_then_the_order():
    assert ship.pick_student(table(paper=(row(4), row(5)), release=(row(5), row(5))), ["paper", "release"])["recipe"] == "release"
    # The same cells: the larger mean relative gap wins.
    wide = table(paper=(row(5, by=0.01), row(5, by=0.01)), release=(row(5, by=0.05), row(5, by=0.05)))
    assert ship.pick_student(wide, ["paper", "release"])["recipe"] == "release"
    # A full tie: the first recipe given.
    tie = table(paper=(row(6), row(6)), release=(row(6), row(6)))
    assert ship.pick_student(tie, ["release", "paper"])["recipe"] == "release"
    assert ship.pick_student(tie, ["paper", "release"])["recipe"] == "paper"


def test_equal_counts_as_at_least_as_good():
    equal = {m: REF[m] for m in PAPER_METRICS}
    decision = ship.pick_student(table(paper=(equal, equal)), ["paper"])
    assert decision["qualifies"] and decision["recipes"]["paper"]["at_least"] == 12


def test_none_qualifies_ships_the_best_and_says_so_with_the_gaps():
    decision = ship.pick_student(table(paper=(row(3), row(6)), release=(row(2), row(2))), ["paper", "release"])
    assert decision["recipe"] == "paper" and decision["qualifies"] is False
    sentence = decision["sentence"]
    assert sentence.startswith("NO candidate meets the goal") and "3 of 6 on RoadScene" in sentence
    gap = REF["Qabf"] * -0.01  # Qabf, the 4th metric, is below on RoadScene
    assert f"Qabf {gap:+.4g}" in sentence and "MRI-PET:" not in sentence  # MRI-PET has nothing below


def test_lower_is_better_metrics_count_the_other_way():
    rows = {"RoadScene": {ship.REFERENCE: {"MSE": 10.0, "SD": 5.0}, "student (paper)": {"MSE": 9.0, "SD": 4.0}}}
    decision = ship.pick_student(rows, ["paper"], metrics=("MSE", "SD"), need=1)
    assert decision["recipes"]["paper"]["sets"]["RoadScene"]["at_least"] == ["MSE"] and decision["qualifies"]


def test_compact_serialisation_loads_the_same_tensors_in_fewer_bytes(tmp_path):
    state = build_model("student").state_dict()
    sizes = ship.size_options(state)
    assert sizes["legacy_one_storage"] == min(sizes.values()) < sizes["zip_per_tensor"]
    path = tmp_path / "student.pth"
    path.write_bytes(ship.serialise(state))
    loaded = torch.load(path, weights_only=True)
    assert list(loaded) == list(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    # The legacy format names storages by memory address: renamed, equal weights give equal bytes
    # (with one storage; several are also written in the order of their addresses).
    copy = {k: v.clone() for k, v in state.items()}
    assert ship.serialise(copy) == ship.serialise(state)


def _write_set(root, first, second, count=2, size=(128, 96), seed=0):
    rng = np.random.default_rng(seed)
    for name, colour in ((first, False), (second, True)):
        (root / name).mkdir(parents=True)
        for index in range(count):
            cells = rng.random((6, 8, 3) if colour else (6, 8))
            image = np.clip(cv2.resize(cells, size, interpolation=cv2.INTER_CUBIC) * 255, 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / name / f"{index:02d}.png"), image)
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, toy_weights):
    assert toy_weights["second"].returncode == 0, toy_weights["second"].stderr[-3000:]
    base = tmp_path_factory.mktemp("ship-inputs")
    released = base / "released"
    released.mkdir()
    for seed, kind in enumerate(("student", "teacher")):
        torch.manual_seed(seed)
        torch.save(build_model(kind).state_dict(), released / f"{kind}.model")
    return {"candidates": toy_weights["out"], "released": released,
            "roadscene": _write_set(base / "RoadScene", "ir", "vi"),
            "mri_pet": _write_set(base / "MRI_PET", "PET", "MRI", seed=1)}  # fmt: skip


def arguments(inputs, out, *extra):
    return ["--candidates", str(inputs["candidates"]), "--out", str(out), "--roadscene", str(inputs["roadscene"]),
            "--mri-pet", str(inputs["mri_pet"]), "--released", str(inputs["released"]), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def shipment(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ship-out") / "weights"
    assert ship.main(arguments(inputs, out)) == 0
    return out


@pytest.mark.slow
def test_shipment_holds_loadable_weights_that_fuse_as_the_candidate(shipment, inputs):
    info = json.loads((shipment / "weights.json").read_text())
    recipe = info["recipe"]
    assert recipe in ("paper", "release") and info["rule"]["recipe"] == recipe and info["toy"] is True
    assert sorted(p.name for p in shipment.iterdir() if not p.name.startswith(".")) == sorted(ship.FILES)
    rng = np.random.default_rng(3)
    ir, vi = rng.integers(0, 256, (2, 40, 56), dtype=np.uint8)
    for kind in ("student", "teacher"):
        candidate = inputs["candidates"] / recipe / kind / f"{kind}.pth"
        shipped = fuse_arrays(load_fusion_model(kind, shipment / f"{kind}.pth"), ir, vi)
        np.testing.assert_array_equal(shipped, fuse_arrays(load_fusion_model(kind, candidate), ir, vi))
        assert info["serialisation"]["bytes"][kind]["legacy_one_storage"] == (shipment / f"{kind}.pth").stat().st_size
        assert (shipment / f"{kind}_losses.csv").read_bytes() == (candidate.parent / "losses.csv").read_bytes()
    # The student was distilled from the shipped teacher: its training metadata names that teacher's folder.
    assert json.loads((shipment / "student.json").read_text())["teacher_weights"].endswith(f"{recipe}/teacher/teacher.pth")
    assert (shipment / "commands.txt").read_text() == (inputs["candidates"] / "commands.txt").read_text()
    for name, entry in info["files"].items():
        assert entry["sha256"] == ship.sha256(shipment / name), name
    assert set(info["files"]) == set(ship.FILES) - {"weights.json"}
    assert info["patches_sha256"] == json.loads((inputs["candidates"] / "patches.json").read_text())["sha256"]
    assert info["train_command"].startswith("PYTHONPATH=$PWD python3 scripts/train_weights.py")


@pytest.mark.slow
def test_the_table_measures_each_row_with_pet_as_infrared(shipment, inputs):
    evaluation = json.loads((shipment / "evaluation.json").read_text())
    rows = ["student (paper)", "teacher (paper)", "student (release)", "teacher (release)", "released student",
            "released teacher", "average", "max", "laplacian"]  # fmt: skip
    assert list(evaluation["table"]) == ["RoadScene", "MRI-PET"] and evaluation["cpu"] == ship.host_cpu()
    released = load_fusion_model("student", inputs["released"] / "student.model")
    for name, (first, second, root) in {"RoadScene": ("ir", "vi", inputs["roadscene"]),
                                        "MRI-PET": ("PET", "MRI", inputs["mri_pet"])}.items():  # fmt: skip
        assert list(evaluation["table"][name]) == rows
        # The released student (not symmetric in its inputs) measured by hand, the first folder as infrared.
        scores = []
        for path in sorted((root / first).iterdir()):
            ir, vi = read_gray(path), read_gray(root / second / path.name)
            scores.append(evaluate_pair(to_uint8(fuse_arrays(released, ir, vi)[0], "minmax"), ir, vi, PAPER_METRICS))
        by_hand = {m: float(np.mean([s[m] for s in scores])) for m in PAPER_METRICS}
        assert evaluation["table"][name]["released student"] == pytest.approx(by_hand, rel=1e-3, abs=1e-3)
    markdown = (shipment / "weights.md").read_text()
    assert "## RoadScene (2 pairs)" in markdown and "## MRI-PET (2 pairs)" in markdown and markdown.count("**shipped** |") == 4
    assert len((shipment / "weights.csv").read_text().splitlines()) == 1 + 2 * len(rows)


@pytest.mark.slow
def test_an_existing_shipment_is_replaced_only_with_overwrite(shipment, inputs, tmp_path, capsys):
    out = tmp_path / "weights"
    shutil.copytree(shipment, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert ship.main(arguments(inputs, out)) == 2
    assert "already holds shipped weights; pass --overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert ship.main(arguments(inputs, out, "--overwrite")) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(ship.FILES)
    assert (out / "student.pth").read_bytes() == before["student.pth"]  # the same candidates: the same choice
    assert not [p for p in tmp_path.iterdir() if p.name != "weights"]  # no staging left beside it


def test_refusals_name_what_is_wrong_and_change_nothing(inputs, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's file")
    assert ship.main(arguments(inputs, foreign)) == 2
    assert "not a shipment of scripts/ship_weights.py" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    package = REPO / "mmdrfuse" / "weights"
    existed = package.exists()
    assert ship.main(arguments(inputs, package)) == 2  # a toy run never becomes the package's weights
    assert "is a --toy run" in capsys.readouterr().err and package.exists() == existed

    released = tmp_path / "released"
    released.mkdir()
    shutil.copy(inputs["released"] / "student.model", released)
    args = arguments(inputs, tmp_path / "out")
    args[args.index("--released") + 1] = str(released)
    assert ship.main(args) == 2
    assert f"missing released weights file: {released / 'teacher.model'}" in capsys.readouterr().err

    candidates = tmp_path / "candidates"
    shutil.copytree(inputs["candidates"], candidates)
    (candidates / "release" / "student" / "losses.csv").unlink()
    args = arguments(inputs, tmp_path / "out")
    args[args.index("--candidates") + 1] = str(candidates)
    assert ship.main(args) == 2
    assert str(candidates / "release" / "student" / "losses.csv") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
