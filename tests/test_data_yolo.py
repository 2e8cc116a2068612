"""YOLO datasets: label conversion, seeded shared subsets, idempotent atomic builds."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import yaml
from conftest import shared_path
from helpers import run_data_cli, settings

import mmdrfuse.data.yolo as yolo_module
from mmdrfuse.data.llvip import Annotation, read_annotation
from mmdrfuse.data.yolo import build_yolo_dataset, select_subset, yolo_labels
from mmdrfuse.errors import DataError


@pytest.fixture(scope="module")
def llvip(make_shared_llvip):
    """SYNTHETIC LLVIP-like folder: 8 train + 4 test pairs of 160x128."""
    return make_shared_llvip(train=8, test=4, size=(160, 128), seed=2)


def subset(root, **overrides):
    """The detection subset ``prepare yolo`` draws with its defaults (default.yaml) and ``overrides``."""
    options = settings("prepare_yolo", **overrides)
    return select_subset(root, train=options["train"], val=options["val"], seed=options["seed"])


def _read_labels(out):
    return {p.stem: p.read_text() for p in sorted(out.glob("labels/*/*.txt"))}


def test_labels_follow_llvips_conversion():
    annotation = Annotation(200, 100, np.array([[10, 20, 50, 80], [0, 0, 200, 100]]), ["person", "person"])
    assert yolo_labels(annotation) == ["0 0.150000 0.500000 0.200000 0.600000", "0 0.500000 0.500000 1.000000 1.000000"]
    no_size = Annotation(0, 0, np.array([[10, 20, 50, 80]]), ["person"])
    assert yolo_labels(no_size, (400, 50)) == ["0 0.075000 1.000000 0.100000 1.200000"]
    with pytest.raises(DataError):
        yolo_labels(no_size)
    assert yolo_labels(Annotation(10, 10, np.array([[1, 1, 2, 2]]), ["car"])) == []


def test_subset_is_seeded_and_disjoint(llvip):
    first = select_subset(llvip, train=5, val=2, seed=4)
    assert first == select_subset(llvip, train=5, val=2, seed=4)
    assert first["val_from"] == "test" and len(first["train"]) == 5 and len(first["val"]) == 2
    assert all(i.startswith("01") for i in first["train"]) and all(i.startswith("19") for i in first["val"])
    assert len({tuple(select_subset(llvip, train=5, val=2, seed=s)["train"]) for s in range(5)}) > 1


def test_val_is_carved_from_train_without_a_test_split(make_llvip):
    root = make_llvip(train=9, test=0, size=(96, 96))
    carved = subset(root)  # 2000 + 250 asked for
    assert carved["val_from"] == "train" and carved["val"] and not set(carved["val"]) & set(carved["train"])
    assert len(carved["train"]) + len(carved["val"]) == 9
    assert any("carved" in note for note in carved["notes"])


def test_build_writes_labels_links_and_an_ultralytics_yaml(llvip, tmp_path):
    data_yaml = build_yolo_dataset(llvip, llvip / "visible", tmp_path / "ds", manifest=subset(llvip, train=6, val=3),
                                   strict=False, progress=False, log=lambda _: None)
    out = tmp_path / "ds"
    config = yaml.safe_load(data_yaml.read_text())
    assert config == {"path": str(out.resolve()), "train": "images/train", "val": "images/val", "names": {0: "person"}}
    manifest = json.loads((out / "manifest.json").read_text())
    for split in ("train", "val"):
        images = sorted(p.stem for p in (out / "images" / split).iterdir())
        assert images == manifest["subset"][split]
    assert len(manifest["subset"]["train"]) == 6 and len(manifest["subset"]["val"]) == 3
    for pair_id, text in _read_labels(out).items():
        expected = yolo_labels(read_annotation(llvip / "Annotations" / f"{pair_id}.xml"))
        assert text.splitlines() == expected
    link = next((out / "images" / "val").iterdir())
    assert link.resolve() == (llvip / "visible" / "test" / link.name).resolve()


def test_rerun_is_idempotent_and_a_manifest_reuses_the_subset(llvip, tmp_path):
    kwargs = dict(manifest=subset(llvip, train=6, val=2, seed=1), strict=False, progress=False, log=lambda _: None)
    build_yolo_dataset(llvip, llvip / "infrared", tmp_path / "ds", **kwargs)
    first = _read_labels(tmp_path / "ds")
    build_yolo_dataset(llvip, llvip / "infrared", tmp_path / "ds", **kwargs)
    assert _read_labels(tmp_path / "ds") == first
    for text in first.values():
        assert len(text.splitlines()) == len(set(text.splitlines()))
    # Another method's images, another seed: the manifest keeps the same subset.
    flat = tmp_path / "fused"
    flat.mkdir()
    for path in llvip.glob("visible/*/*.jpg"):
        shutil.copy(path, flat / path.name)
    build_yolo_dataset(llvip, flat, tmp_path / "other", **{**kwargs, "manifest": tmp_path / "ds" / "manifest.json"})
    assert _read_labels(tmp_path / "other") == first


def test_missing_image_of_the_subset_is_an_error(llvip, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for path in list(llvip.glob("infrared/train/*.jpg"))[:-1]:
        shutil.copy(path, partial / path.name)
    with pytest.raises(DataError, match="missing from"):
        build_yolo_dataset(llvip, partial, tmp_path / "ds", manifest=subset(llvip, train=8, val=2), strict=False,
                           progress=False, log=lambda _: None)
    assert not (tmp_path / "ds").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images"):
        build_yolo_dataset(llvip, empty, tmp_path / "ds", manifest=subset(llvip), strict=False, progress=False,
                           log=lambda _: None)


def test_a_subset_with_an_id_in_both_splits_is_refused_before_any_work(llvip, tmp_path):
    drawn = subset(llvip, train=4, val=2)
    overlapping = {**drawn, "val": drawn["val"] + drawn["train"][:1]}
    with pytest.raises(DataError, match="both train and val"):
        build_yolo_dataset(llvip, llvip / "infrared", tmp_path / "ds", manifest=overlapping, strict=False,
                           progress=False, log=lambda _: None)
    with pytest.raises(DataError, match="not an mmdrfuse YOLO subset"):
        build_yolo_dataset(llvip, llvip / "infrared", tmp_path / "ds", manifest={"train": drawn["train"]},
                           strict=False, progress=False, log=lambda _: None)
    assert not (tmp_path / "ds").exists()


def test_interrupted_rebuild_keeps_the_previous_dataset(llvip, tmp_path, monkeypatch):
    kwargs = dict(manifest=subset(llvip, train=4, val=2), strict=False, progress=False, log=lambda _: None)
    build_yolo_dataset(llvip, llvip / "infrared", tmp_path / "ds", **kwargs)
    before = _read_labels(tmp_path / "ds")
    calls = []

    def failing_link(source, target):
        calls.append(target)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_link(source, target)

    real_link = yolo_module._link
    monkeypatch.setattr(yolo_module, "_link", failing_link)
    with pytest.raises(KeyboardInterrupt):
        build_yolo_dataset(llvip, llvip / "visible", tmp_path / "ds", **{**kwargs, "manifest": subset(llvip, seed=5)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert _read_labels(tmp_path / "ds") == before
    monkeypatch.undo()
    with pytest.raises(KeyboardInterrupt), monkeypatch.context() as patch:
        patch.setattr(yolo_module, "_link", failing_link)
        calls.clear()
        build_yolo_dataset(llvip, llvip / "visible", tmp_path / "fresh", **kwargs)
    assert not (tmp_path / "fresh").exists()


def test_unannotated_and_badly_annotated_images_are_skipped(tmp_path, make_llvip):
    root = make_llvip(train=6, test=2, size=(96, 96))
    (root / "Annotations" / "010002.xml").unlink()
    (root / "Annotations" / "010003.xml").write_text("not xml")
    messages = []
    build_yolo_dataset(root, root / "infrared", tmp_path / "ds", manifest=subset(root), strict=False, progress=False,
                       log=messages.append)
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["skipped"] == {"no_annotation": ["010002"], "bad_annotation": ["010003"], "bad_image": []}
    assert "010002" not in _read_labels(tmp_path / "ds")
    assert any("1 image(s) without annotation" in m for m in messages)
    with pytest.raises(DataError, match="010002.xml"):
        build_yolo_dataset(root, root / "infrared", tmp_path / "strict", manifest=subset(root), strict=True,
                           progress=False, log=print)


def test_cli_on_the_real_samples(tmp_path, capsys):
    root = shared_path("datasets", "LLVIP-samples")
    code = run_data_cli(["prepare", "yolo", "--root", str(root), "--images", str(root / "infrared" / "train"),
                 "--out", str(tmp_path / "ds"), "--quiet"])
    assert code == 0
    assert "skipped 31 image(s) without annotation" in capsys.readouterr().out
    labels = _read_labels(tmp_path / "ds")
    assert list(labels) == ["010005"]
    rows = [[float(v) for v in line.split()] for line in labels["010005"].splitlines()]
    boxes = [(849, 405, 961, 663), (974, 133, 1076, 363), (1155, 39, 1256, 270)]
    expected = [[0, (a + c) / 2 / 1280, (b + d) / 2 / 1024, (c - a) / 1280, (d - b) / 1024] for a, b, c, d in boxes]
    np.testing.assert_allclose(rows, expected, atol=1e-6)


def test_resized_images_keep_normalised_labels_but_crops_are_rejected(tmp_path, make_llvip):
    root = make_llvip(train=3, test=1, size=(160, 128))
    images = tmp_path / "fused"
    images.mkdir()
    for path in root.glob("infrared/*/*.jpg"):
        image = cv2.imread(str(path))
        size = (80, 64) if path.stem != "010002" else (160, 100)  # 010002 is cropped, not resized
        cv2.imwrite(str(images / f"{path.stem}.png"), cv2.resize(image, size) if size[1] == 64 else image[:100])
    build_yolo_dataset(root, images, tmp_path / "ds", manifest=subset(root), strict=False, progress=False, log=lambda _: None)
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["skipped"]["bad_annotation"] == ["010002"] and "010002.png" in manifest["problems"][0]
    labels = _read_labels(tmp_path / "ds")
    assert labels["010001"].splitlines() == yolo_labels(read_annotation(root / "Annotations" / "010001.xml"))


def test_cli_select_then_reuse(llvip, tmp_path):
    subset = tmp_path / "subset.json"
    assert run_data_cli(["prepare", "yolo", "--root", str(llvip), "--select", str(subset), "--train", "3", "--val", "2"]) == 0
    chosen = json.loads(subset.read_text())
    assert len(chosen["train"]) == 3 and len(chosen["val"]) == 2
    assert run_data_cli(["prepare", "yolo", "--root", str(llvip), "--images", str(llvip / "visible"), "--out",
                         str(tmp_path / "ds"), "--manifest", str(subset), "--seed", "8", "--quiet"]) == 0
    built = json.loads((tmp_path / "ds" / "manifest.json").read_text())["subset"]
    assert (built["train"], built["val"]) == (chosen["train"], chosen["val"])
    with pytest.raises(ValueError, match="--images and --out"):
        run_data_cli(["prepare", "yolo", "--root", str(llvip)])


def test_links_fall_back_to_hardlinks_then_copies(llvip, tmp_path, monkeypatch):
    def refuse(*_):
        raise OSError("not supported here")

    kwargs = dict(manifest=subset(llvip, train=2, val=1), strict=False, progress=False, log=lambda _: None)
    monkeypatch.setattr(yolo_module.os, "symlink", refuse)
    build_yolo_dataset(llvip, llvip / "infrared", tmp_path / "hard", **kwargs)
    assert json.loads((tmp_path / "hard" / "manifest.json").read_text())["links"] == ["hardlink"]
    monkeypatch.setattr(yolo_module.os, "link", refuse)
    build_yolo_dataset(llvip, llvip / "infrared", tmp_path / "copy", **kwargs)
    assert json.loads((tmp_path / "copy" / "manifest.json").read_text())["links"] == ["copy"]
    image = next((tmp_path / "copy" / "images" / "train").iterdir())
    assert not image.is_symlink() and image.read_bytes() == (llvip / "infrared" / "train" / image.name).read_bytes()
