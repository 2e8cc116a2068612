"""A toy YOLO run end to end: the validator's own predictions scored by pycocotools agree with
ultralytics' mAP, and they are the very predictions behind it."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmdrfuse.detection import coco_eval
from mmdrfuse.detection.matching import match_coco
from mmdrfuse.detection.statistics import seed_table, weighted_map


def toy_dataset(root, images=24):
    """Bright rectangles on a dark background, the validation split the training images (the
    detector is to learn something in seconds, not to generalise)."""
    rng = np.random.default_rng(0)
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for index in range(images):
        image = np.full((96, 128, 3), 30, np.uint8)
        lines = []
        for _ in range(int(rng.integers(1, 3))):
            w, h = (int(v) for v in rng.integers(16, 40, 2))
            x, y = int(rng.integers(0, 128 - w)), int(rng.integers(0, 96 - h))
            image[y : y + h, x : x + w] = 220
            lines.append(f"0 {(x + w / 2) / 128} {(y + h / 2) / 96} {w / 128} {h / 96}")
        cv2.imwrite(str(root / "images" / "train" / f"{index:03d}.png"), image)
        (root / "labels" / "train" / f"{index:03d}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/train\nnames: {{0: box}}\n")
    return data


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    from mmdrfuse.detection.yolo_train import train_detector

    root = tmp_path_factory.mktemp("toy")
    data = toy_dataset(root)
    # 40 epochs from scratch without warm-up (about 40 s on 2 cores; fewer learn nothing): mAP about
    # 0.48, the demo's range.
    result = train_detector(data, root / "run", model="yolov5n.yaml", weights=None, epochs=40, batch=8, imgsz=128,
                            optimizer="SGD", lr0=0.04, seed=0, warmup_epochs=0, device="cpu", workers=0, quiet=True,
                            extra={"val": False})
    return {**result, "data": data, "root": root}


@pytest.mark.slow
def test_pycocotools_agrees_with_ultralytics_on_the_validators_predictions(toy_run):
    assert toy_run["map50_95"] > 0.2  # it learnt something: the agreement is not 0 = 0
    assert toy_run["coco"]["AP"] == pytest.approx(toy_run["map50_95"], abs=0.005)
    assert toy_run["map50_95_coco"] == toy_run["coco"]["AP"]
    assert set(toy_run["coco"]) == set(coco_eval.STATS) and 0 < toy_run["lamr"] < 1


@pytest.mark.slow
def test_the_saved_predictions_are_the_validators_own(toy_run):
    from ultralytics.utils.metrics import ap_per_class

    from mmdrfuse.detection.yolo_val import validate

    gt = json.loads(Path(toy_run["ground_truth"]).read_text())
    saved = json.loads(Path(toy_run["predictions"]).read_text())
    labels = sorted((toy_run["root"] / "labels").rglob("*.txt"))
    assert len(gt["images"]) == 24 and len(gt["annotations"]) == sum(len(p.read_text().split()) // 5 for p in labels)
    assert max(np.bincount([r["image_id"] for r in saved])) <= 100
    again = validate(toy_run["weights"], toy_run["data"], ["box"], toy_run["root"] / "again", imgsz=128, batch=8,
                     device="cpu")
    assert again["predictions"] == saved and again["metrics"]["map50_95"] == toy_run["map50_95"]
    # ultralytics' AP formula on the captured scores with its own true-positive flags gives its
    # mAP: the captured boxes are the ones it scored, in its order.
    scores = np.array([r["score"] for r in saved])
    flags = np.concatenate([again["validator_tp"][image["id"]] for image in gt["images"]])
    ap = ap_per_class(flags, scores, np.zeros(len(scores)), np.zeros(len(gt["annotations"])))[5]
    assert ap.mean() == pytest.approx(toy_run["map50_95"], abs=1e-9)
    # COCO's matching of the saved boxes (clipped to the image, as ultralytics' own COCO JSON)
    # gives the same flags except on boxes the clipping changed: ultralytics matches before it
    # clips. Those few boxes are most of the gap between the two mAPs (here 2 of 980 boxes, 0.004);
    # the rest is the integration (trapezoid rule against COCO's mean of 101 points).
    matches = match_coco(gt, saved)
    ours = np.concatenate([matches[image["file_name"], 1].tp for image in gt["images"]])
    boxes = np.array([r["bbox"] for r in saved])
    clipped = (boxes[:, 0] <= 0) | (boxes[:, 1] <= 0) | (boxes[:, 0] + boxes[:, 2] >= 128 - 1e-3) | (boxes[:, 1] + boxes[:, 3] >= 96 - 1e-3)
    assert (ours == flags)[~clipped].all()
    # and the bootstrap's accumulation with all weights 1 is pycocotools' AP
    table = seed_table(matches, sorted(image["file_name"] for image in gt["images"]))
    assert weighted_map(table, np.ones((1, 24)))[0] == pytest.approx(toy_run["coco"]["AP"], abs=1e-9)


@pytest.mark.slow
def test_the_run_records_its_protocol(toy_run):
    assert toy_run["protocol"] == {"close_mosaic": 10, "mosaic": 1.0, "warmup_epochs": 0.0, "amp": False,
                                   "mosaic_epochs": 30, "warmup_epochs_used": 0.0, "amp_used": False}
    assert toy_run["seed"] == 0
