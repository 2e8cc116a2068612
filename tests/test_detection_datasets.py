"""Every method is trained and validated on the same ids; offline weights fail early and clearly."""
import json
from pathlib import Path

import pytest

from mmdrfuse.cli import main
from mmdrfuse.data.io import list_images
from mmdrfuse.detection import yolo_offline
from mmdrfuse.errors import DataError
from mmdrfuse.pipeline import stages


@pytest.fixture
def llvip(make_shared_llvip):
    return make_shared_llvip(train=8, test=4, size=(96, 80))


def test_same_ids_for_every_method(llvip, tmp_path):
    manifest_path = stages.prepare(tmp_path / "prepare", root=llvip, patches=None, subset={"train": 5, "val": 3, "seed": 1},
                                   progress=False, log=lambda *a: None)["manifest"]
    manifest = json.loads(Path(manifest_path).read_text())
    assert len(manifest["train"]) == 5 and len(manifest["val"]) == 3
    datasets = {}
    for name in ("infrared", "max", "laplacian"):
        fused = stages.fuse_method(tmp_path / name, name=name, root=llvip, ids=manifest["train"] + manifest["val"],
                                   weights=None, device="cpu", scaling="minmax", batch=8, progress=False)
        assert (fused["fusion_ms_per_image"] is None) == (name == "infrared")
        assert sorted(list_images(fused["images"])) == sorted(manifest["train"] + manifest["val"])
        datasets[name] = stages.build_dataset(tmp_path / f"dataset-{name}", name=name, root=llvip, images=fused["images"],
                                              manifest=manifest_path, progress=False, log=lambda *a: None)["data_yaml"]
    for split in ("train", "val"):
        ids = {name: sorted(list_images(Path(d).parent / "images" / split)) for name, d in datasets.items()}
        assert all(v == sorted(manifest[split]) for v in ids.values()), ids
        labels = {name: [(Path(d).parent / "labels" / split / f"{i}.txt").read_text() for i in manifest[split]]
                  for name, d in datasets.items()}
        assert labels["infrared"] == labels["max"] == labels["laplacian"]


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
