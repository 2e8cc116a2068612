"""No stale result is reused (issue 14, item 2): the pipeline's and detect's stage keys cover the
content of the images, the annotations and the weights they read. The detector training is
replaced by a stub (ultralytics is not what is tested); fusion and datasets run for real."""
import json
from pathlib import Path

import cv2
import pytest

from mmdrfuse.pipeline import stages
from mmdrfuse.pipeline.run import run_pipeline

METHODS = ["max", "student"]


@pytest.fixture
def trained(monkeypatch):
    """The detector runs, as the method names of their datasets; train_detector writes what the report reads."""
    runs = []

    def fake_train_detector(data_yaml, out_dir, **protocol):
        runs.append(Path(data_yaml).parents[1].name.split("-")[1])
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "predictions.json").write_text("[]")
        (out_dir / "ground_truth.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
        return {"map50_95": 0.5, "map50": 0.7, "precision": 0.6, "recall": 0.6, "map50_95_coco": 0.5,
                "map50_coco": 0.7, "train_seconds": 0.0, "weights": str(out_dir / "best.pt")}

    monkeypatch.setattr(stages, "train_detector", fake_train_detector)
    monkeypatch.setattr(stages, "summarise", lambda runs, **settings: {"methods": {}})
    monkeypatch.setattr(stages, "write_report", lambda folder, results, examples: (folder / "report.md").write_text("r"))
    return runs


@pytest.fixture
def setup(make_llvip, random_weights, tmp_path):
    root = make_llvip(train=4, test=2, size=(64, 48), seed=5)
    weights = random_weights("student", seed=1, path=tmp_path / "my_student.pth")
    mine = tmp_path / "mine"  # a user's method: uncompressed BMPs, whose size does not change with content
    mine.mkdir()
    for image in sorted((root / "infrared").rglob("*.jpg")):
        cv2.imwrite(str(mine / f"{image.stem}.bmp"), cv2.imread(str(image), cv2.IMREAD_GRAYSCALE))
    config = {"data": {"root": str(root)}, "device": "cpu", "prepare": {"subset": {"train": 3, "val": 2, "seed": 0}},
              "fuse": {"methods": METHODS}, "student": {"weights": str(weights)},
              "detect": {"model": "yolov5n.yaml", "weights": "none", "epochs": 1, "batch": 2, "imgsz": 64}}
    return {"root": root, "weights": weights, "mine": mine, "config": config, "out": tmp_path / "run"}


def run(setup):
    outcome = run_pipeline(setup["config"], setup["out"], methods={"mine": setup["mine"]}, progress=False,
                           log=lambda *a: None)
    return sorted(outcome["ran"])


def test_unchanged_inputs_skip_every_stage(setup, trained):
    first = run(setup)
    assert {"prepare", "fuse/max", "fuse/student", "datasets/mine", "detect/mine-seed0", "report"} <= set(first)
    assert sorted(trained) == ["max", "mine", "student"]
    assert run(setup) == [] and len(trained) == 3


def test_one_pixel_of_a_users_image_reruns_its_dataset_and_detector_only(setup, trained):
    run(setup)
    image = sorted(setup["mine"].glob("*.bmp"))[0]
    size = image.stat().st_size
    pixels = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
    pixels[0, 0] = 255 - pixels[0, 0]
    cv2.imwrite(str(image), pixels)
    assert image.stat().st_size == size
    trained.clear()
    assert run(setup) == ["datasets/mine", "detect/mine-seed0", "report"]
    assert trained == ["mine"]


def test_one_box_of_an_annotation_reruns_everything_that_reads_it(setup, trained):
    run(setup)
    xml = sorted((setup["root"] / "Annotations").glob("*.xml"))[0]
    text = xml.read_text()
    start = text.index("<xmin>") + len("<xmin>")
    end = text.index("</xmin>")
    xml.write_text(text[:start] + str(int(text[start:end]) + 1) + text[end:])
    trained.clear()
    ran = run(setup)
    assert {"prepare", "datasets/max", "datasets/mine", "datasets/student", "detect/max-seed0", "detect/mine-seed0"} <= set(ran)
    assert sorted(trained) == ["max", "mine", "student"]


def test_new_weights_at_the_same_path_refuse_the_old_fused_images(setup, trained, random_weights):
    run(setup)
    student_dir = next(p for p in setup["out"].iterdir() if p.name.startswith("fuse-student-"))
    random_weights("student", seed=2, path=setup["weights"])  # retrained to the same file name
    trained.clear()
    assert run(setup) == ["datasets/student", "detect/student-seed0", "fuse/student", "report"]
    assert trained == ["student"]
    assert student_dir.is_dir()  # the old stage folder is left as it was; the new one has its own key


def test_detect_is_the_pipeline_without_training_stages(setup, trained, capsys):
    from mmdrfuse.cli import main

    out = setup["out"].with_name("detect")
    argv = ["detect", "--root", str(setup["root"]), "--out", str(out), "--builtin", "max,student", "--student-weights",
            str(setup["weights"]), "--method", f"mine={setup['mine']}", "--weights", "none", "--train", "3", "--val",
            "2", "--epochs", "1", "--imgsz", "64", "--quiet"]
    assert main(argv) == 0
    assert sorted(trained) == ["max", "mine", "student"]
    names = sorted(p.name.rsplit("-", 1)[0] for p in out.iterdir() if (p / "DONE").is_file())
    assert names == ["datasets-max", "datasets-mine", "datasets-student", "detect-max-seed0", "detect-mine-seed0",
                     "detect-student-seed0", "fuse-max", "fuse-student", "prepare", "report"]
    assert (out / "report" / "report.md").is_file()
    trained.clear()
    assert main(argv) == 0 and trained == []
