"""``mmdrfuse evaluate`` end to end on tiny folders, and its handling of bad input."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from mmdrfuse.cli import main
from mmdrfuse.errors import DataError
from mmdrfuse.metrics import PAPER_METRICS, evaluate_folders, evaluate_pair


def _write_dataset(root, stems=("a", "b", "c"), shape=(48, 56)):
    rng = np.random.default_rng(0)
    images = {}
    for folder in ("ir", "vi", "good", "bad"):
        (root / folder).mkdir()
    for stem in stems:
        ir = rng.integers(0, 256, shape).astype(np.uint8)
        vi = cv2.GaussianBlur(rng.integers(0, 256, shape).astype(np.uint8), (5, 5), 0)
        good, bad = np.maximum(ir, vi), (ir // 2)
        for folder, image in (("ir", ir), ("vi", vi), ("good", good), ("bad", bad)):
            cv2.imwrite(str(root / folder / f"{stem}.png"), image)
        images[stem] = (ir, vi, good, bad)
    return images


def test_evaluate_single_folder_writes_json_csv_markdown(tmp_path, capsys):
    images = _write_dataset(tmp_path)
    out = tmp_path / "out"
    code = main([
        "evaluate", "--fused", str(tmp_path / "good"), "--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"),
        "--metrics", "sd,VIF,MSE", "--json", str(out / "m.json"), "--csv", str(out / "m.csv"),
        "--markdown", str(out / "m.md"), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    data = json.loads((out / "m.json").read_text())
    assert data["n"] == 3 and [row["name"] for row in data["per_image"]] == ["a", "b", "c"]
    ir, vi, good, _ = images["b"]
    expected = evaluate_pair(good, ir, vi, ["SD", "VIF", "MSE"])
    assert data["per_image"][1] == pytest.approx({"name": "b", **expected})
    assert data["mean"]["VIF"] == pytest.approx(np.mean([row["VIF"] for row in data["per_image"]]))
    rows = list(csv.DictReader((out / "m.csv").open()))
    assert [row["name"] for row in rows] == ["a", "b", "c"]  # per image only, no mean row
    assert float(rows[1]["SD"]) == pytest.approx(expected["SD"])
    markdown = (out / "m.md").read_text()
    assert "| b |" in markdown and "mean (n=3)" in markdown
    assert "VIF" in capsys.readouterr().out


def test_evaluate_methods_table_marks_best_and_second(tmp_path):
    images = _write_dataset(tmp_path)
    average = tmp_path / "average"
    average.mkdir()
    for stem, (ir, vi, _, _) in images.items():
        cv2.imwrite(str(average / f"{stem}.png"), ((ir.astype(np.float64) + vi) / 2).round().astype(np.uint8))
    out = tmp_path / "table.md"
    code = main([
        "evaluate", "--method", f"good={tmp_path / 'good'}", "--method", f"bad={tmp_path / 'bad'}",
        "--method", f"average={average}", "--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"),
        "--metrics", "SD,MSE", "--markdown", str(out), "--json", str(tmp_path / "t.json"), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    data = json.loads((tmp_path / "t.json").read_text())["methods"]
    assert list(data) == ["good", "bad", "average"] and all(result["n"] == 3 for result in data.values())
    means = {name: result["mean"] for name, result in data.items()}
    lines = {line.split("|")[1].split(" (")[0].strip(): line for line in out.read_text().splitlines()[2:]}
    lowest_mse = min(means, key=lambda name: means[name]["MSE"])  # lower is better for MSE
    highest_sd = max(means, key=lambda name: means[name]["SD"])
    assert f"**{means[lowest_mse]['MSE']:.4f}**" in lines[lowest_mse]
    assert f"**{means[highest_sd]['SD']:.4f}**" in lines[highest_sd]
    second_sd = sorted(means, key=lambda name: means[name]["SD"])[-2]
    assert f"<u>{means[second_sd]['SD']:.4f}</u>" in lines[second_sd]
    assert sum(line.count("**") for line in lines.values()) == 4  # one best per column


def test_missing_and_mismatched_fused_images_are_listed(tmp_path):
    _write_dataset(tmp_path, stems=("a", "b", "c", "d"))
    (tmp_path / "good" / "b.png").unlink()
    (tmp_path / "good" / "c.png").unlink()
    cv2.imwrite(str(tmp_path / "good" / "d.png"), np.zeros((48, 57), np.uint8))
    with pytest.raises(DataError) as error:
        evaluate_folders(tmp_path / "good", tmp_path / "ir", tmp_path / "vi", metrics=PAPER_METRICS, progress=False)
    message = str(error.value)
    assert "3 problem(s)" in message and "b: no fused image" in message and "c: no fused image" in message
    assert "d: size mismatch" in message and "57x48" in message
    result = evaluate_folders(
        tmp_path / "good", tmp_path / "ir", tmp_path / "vi", metrics=["SD"], allow_missing=True, progress=False
    )
    assert result["n"] == 1 and len(result["skipped"]) == 3


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    _write_dataset(tmp_path)
    (tmp_path / "good" / "b.png").write_bytes(b"not an image")
    args = ["evaluate", "--fused", str(tmp_path / "good"), "--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi")]
    assert main(args + ["--no-progress"]) == 2
    assert "b.png" in capsys.readouterr().err  # the unreadable file is named
    (tmp_path / "good" / "b.png").unlink()
    assert main(args + ["--no-progress"]) == 2
    assert "no fused image" in capsys.readouterr().err
    assert main(args + ["--no-progress", "--allow-missing", "--metrics", "SD"]) == 0
    assert "skipped 1 image(s)" in capsys.readouterr().err
    assert main(args + ["--metrics", "SD,NOPE"]) == 2
    assert main(["evaluate", "--method", "nodir", "--ir", "x", "--vi", "y"]) == 2
