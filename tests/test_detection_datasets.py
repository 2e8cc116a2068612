"""Every method is trained and validated on the same ids; offline weights fail early and clearly."""
import json
from pathlib import Path

import pytest

from mmdrfuse.cli import main
from mmdrfuse.data.io import list_images
from mmdrfuse.data.synthetic import generate
from mmdrfuse.detection import yolo_offline
from mmdrfuse.errors import DataError
from mmdrfuse.pipeline.compare import build_datasets
from mmdrfuse.pipeline.detect import builtin_images, subset_manifest


@pytest.fixture(scope="module")
def llvip(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn") / "llvip", train=8, test=4, size=(96, 80), progress=False)


def test_same_ids_for_every_method(llvip, tmp_path):
    manifest_path = subset_manifest(llvip, tmp_path, train=5, val=3, seed=1)
    manifest = json.loads(manifest_path.read_text())
    assert len(manifest["train"]) == 5 and len(manifest["val"]) == 3
    folders = {}
    for name in ("infrared", "max", "laplacian"):
        ms = builtin_images(name, llvip, manifest, tmp_path / "images", weights=None, device="cpu", progress=False)
        assert (ms is None) == (name == "infrared")
        folders[name] = tmp_path / "images" / name
        assert sorted(list_images(folders[name])) == sorted(manifest["train"] + manifest["val"])
    datasets = build_datasets(llvip, folders, manifest_path, tmp_path / "datasets", progress=False, log=lambda *a: None)
    for split in ("train", "val"):
        ids = {name: sorted(list_images(Path(d).parent / "images" / split)) for name, d in datasets.items()}
        assert all(v == sorted(manifest[split]) for v in ids.values()), ids
        labels = {name: [(Path(d).parent / "labels" / split / f"{i}.txt").read_text() for i in manifest[split]]
                  for name, d in datasets.items()}
        assert labels["infrared"] == labels["max"] == labels["laplacian"]
    # The manifest is drawn once: asking again with the same request keeps the file as it is.
    before = manifest_path.stat().st_mtime_ns
    assert subset_manifest(llvip, tmp_path, train=5, val=3, seed=1) == manifest_path
    assert manifest_path.stat().st_mtime_ns == before


def test_weights_resolution(tmp_path, monkeypatch):
    monkeypatch.setattr(yolo_offline, "weights_dir", lambda: tmp_path)
    monkeypatch.chdir(tmp_path)
    assert yolo_offline.resolve_weights("none") is None
    with pytest.raises(DataError, match="--weights none"):
        yolo_offline.resolve_weights("yolov5s.pt", online=False)
    (tmp_path / "yolov5su.pt").write_bytes(b"x")  # the name ultralytics maps yolov5s.pt to
    assert yolo_offline.resolve_weights("yolov5s.pt", online=False) == str((tmp_path / "yolov5su.pt").resolve())
    assert yolo_offline.resolve_weights("yolov5m.pt", online=True) == "yolov5mu.pt"  # left to ultralytics
    with pytest.raises(DataError, match="does not exist"):
        yolo_offline.resolve_weights(str(tmp_path / "sub" / "mine.pt"), online=True)


def test_offline_weights_message_before_any_work(llvip, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(yolo_offline, "is_online", lambda: False)
    out = tmp_path / "out"
    code = main(["detect", "--root", str(llvip), "--out", str(out), "--weights", "yolov5x-not-here.pt",
                 "--builtin", "infrared,max", "--train", "4", "--val", "2"])
    error = capsys.readouterr().err
    assert code == 2
    assert "yolov5x-not-here.pt" in error and "--weights none" in error and "no network" in error
    assert not out.exists()  # nothing fused or trained before the weights were checked
