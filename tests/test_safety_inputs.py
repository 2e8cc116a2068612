"""Issue 14: bad input files. Each test reproduces one defect of the issue: 16-bit images, huge
headers, undecodable and corrupt files, wrong <size>, and messages that named no file."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import settings, validate_llvip, write_pairs

from mmdrfuse.cli import main
from mmdrfuse.data.io import read_gray
from mmdrfuse.data.llvip import read_annotation
from mmdrfuse.data.patches import load_patches, open_patches, prepare_patches
from mmdrfuse.data.yolo import build_yolo_dataset, select_subset
from mmdrfuse.errors import DataError
from mmdrfuse.fusion.infer import fuse_folder
from mmdrfuse.fusion.networks import Student, Teacher, load_model

QUIET = {"progress": False, "log": lambda _: None}
PATCHES = settings("prepare_patches", size=64, stride=64)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(path: Path, side: int = 60000) -> Path:
    """A valid PNG whose header claims side x side pixels (OpenCV raises cv2.error on it)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
                     + _chunk(b"IDAT", zlib.compress(b"\x00" * (side + 1) * 4)) + _chunk(b"IEND", b""))
    return path


@pytest.fixture
def llvip(make_llvip):
    return make_llvip(train=4, test=2, size=(160, 128), seed=3)


def thermal16(path: Path, shape=(64, 80)) -> np.ndarray:
    """A 16-bit thermal frame with values 7000..7999 (a gradient), written as PNG."""
    image = (7000 + np.linspace(0, 999, shape[0] * shape[1]).reshape(shape)).astype(np.uint16)
    assert cv2.imwrite(str(path), image)
    return image


def test_16_bit_images_keep_their_levels_by_a_documented_rule(tmp_path):
    frame = thermal16(tmp_path / "t.png")
    gray = read_gray(tmp_path / "t.png")
    assert gray.dtype == np.uint8 and len(np.unique(gray)) == 256  # not 4-5 levels
    from mmdrfuse.data.io import to_uint8

    assert np.array_equal(gray, to_uint8(frame, "minmax"))
    assert gray.min() == 0 and gray.max() == 255
    fixed = read_gray(tmp_path / "t.png", (6000.0, 9000.0))
    assert abs(int(fixed.min()) - round(255 * 1000 / 3000)) <= 1 and abs(int(fixed.max()) - round(255 * 1999 / 3000)) <= 1


def test_8_bit_images_are_read_bit_identically(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.jpg"), image)
    expected = cv2.cvtColor(cv2.imread(str(tmp_path / "a.jpg"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY)
    assert np.array_equal(read_gray(tmp_path / "a.jpg"), expected)


def test_validate_reports_the_bit_depth(llvip, capsys):
    thermal16(llvip / "infrared" / "train" / "010001.png", shape=(128, 160))
    (llvip / "infrared" / "train" / "010001.jpg").unlink()
    report = validate_llvip(llvip, split="train", no_annotations=True)
    assert report.depths[16] == 1 and report.depths[8] == 7
    assert "16-bit (1 images)" in report.summary()
    assert main(["validate", "--root", str(llvip), "--split", "train", "--quiet"]) == 0
    assert "16-bit" in capsys.readouterr().out


def test_a_huge_png_header_is_one_line_in_fuse_evaluate_patches_and_train(tmp_path, llvip, random_weights, capsys):
    for name in ("ir", "vi", "fused"):
        (tmp_path / name).mkdir()
        huge_png(tmp_path / name / "a.png")
    with pytest.raises(DataError, match="a.png"):
        read_gray(tmp_path / "ir" / "a.png")
    assert main(["fuse", "--weights", str(random_weights()), "--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"),
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "a.png" in capsys.readouterr().err
    assert main(["evaluate", "--fused", str(tmp_path / "fused"), "--ir", str(tmp_path / "ir"),
                 "--vi", str(tmp_path / "vi")]) == 2
    err = capsys.readouterr().err
    assert "a.png" in err.strip().splitlines()[-1] and "Traceback" not in err
    with pytest.raises(DataError, match="a.png"):
        open_patches(tmp_path / "ir", tmp_path / "vi")  # what `train --ir --vi` reads
    huge_png(llvip / "infrared" / "train" / "010001.jpg", side=40000)
    prepare_patches(llvip, **PATCHES, out=tmp_path / "store", **QUIET)  # the pair is skipped
    names = load_patches(tmp_path / "store").names
    assert names and not any(n.startswith("010001") for n in names)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 40] = b"\xff\x00" * 20
    path.write_bytes(bytes(data))


def test_undecodable_pairs_are_found_by_validate_decode_and_skipped_by_patches_and_yolo(llvip, tmp_path):
    truncate(llvip / "visible" / "train" / "010002.jpg")
    store = prepare_patches(llvip, **PATCHES, out=tmp_path / "store", **QUIET)  # skips, not aborts
    names = load_patches(store).names
    assert names and not any(n.startswith("010002") for n in names)
    assert not validate_llvip(llvip, split="train", no_annotations=True).problems  # headers only: it passes
    report = validate_llvip(llvip, split="train", no_annotations=True, decode=True)
    assert [p.name for p, _ in report.problems] == ["010002.jpg"] and report.decoded
    manifest_ids = {"format": "mmdrfuse-yolo-subset/1", "seed": 0, "val_from": "test",
                    "train": ["010001", "010002", "010003"], "val": ["190001"]}
    (tmp_path / "subset.json").write_text(__import__("json").dumps(manifest_ids))
    build_yolo_dataset(llvip, llvip / "visible", tmp_path / "ds", manifest=tmp_path / "subset.json", strict=False, **QUIET)
    linked = sorted(p.stem for p in (tmp_path / "ds" / "images" / "train").iterdir())
    assert linked == ["010001", "010003"]


def test_a_corrupt_middle_jpeg_is_named(llvip):
    corrupt_middle(llvip / "infrared" / "train" / "010003.jpg")
    report = validate_llvip(llvip, split="train", no_annotations=True, decode=True)
    assert len(report.problems) == 1
    file, message = report.problems[0]
    assert file.name == "010003.jpg" and "010003.jpg" in message and "Corrupt JPEG" in message


def test_yolo_labels_use_the_real_image_size_when_the_xml_size_is_a_multiple(llvip, tmp_path):
    xml = llvip / "Annotations" / "010001.xml"
    right = read_annotation(xml)
    xml.write_text(xml.read_text().replace("<width>160</width>", "<width>1280</width>")
                   .replace("<height>128</height>", "<height>1024</height>"))
    messages = []
    build_yolo_dataset(llvip, llvip / "infrared", tmp_path / "ds", manifest=select_subset(llvip, train=4, val=2, seed=0),
                       strict=False, progress=False, log=messages.append)
    label = (tmp_path / "ds" / "labels" / "train" / "010001.txt").read_text().split()
    x0, y0, x1, y1 = right.boxes[0]
    assert float(label[3]) == pytest.approx((x1 - x0) / 160, abs=1e-5)  # not 8x too small
    assert any("real size" in m for m in messages)


def test_a_one_pixel_image_in_fuse_names_the_file(tmp_path, random_weights, capsys):
    ir_dir, vi_dir = write_pairs(tmp_path, [(1, 1)])
    assert main(["fuse", "--weights", str(random_weights()), "--ir", str(ir_dir), "--vi", str(vi_dir),
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "000.png" in capsys.readouterr().err


def test_weights_errors_say_what_the_file_is(tmp_path):
    (tmp_path / "text.model").write_text("these are my notes\n")
    with pytest.raises(ValueError, match="text file"):
        load_model("student", tmp_path / "text.model")
    (tmp_path / "empty.model").write_bytes(b"")
    with pytest.raises(ValueError, match="empty file"):
        load_model("student", tmp_path / "empty.model")
    torch.save(Teacher().state_dict(), tmp_path / "teacher.pth")
    with pytest.raises(ValueError, match="holds teacher weights") as error:
        load_model("student", tmp_path / "teacher.pth")
    assert "\n" not in str(error.value)


def test_nan_weights_are_refused_not_written_as_black_images(tmp_path):
    student = Student()
    with torch.no_grad():
        student.conv1[1].weight.fill_(float("nan"))
    torch.save(student.state_dict(), tmp_path / "nan.pth")
    ir_dir, vi_dir = write_pairs(tmp_path, [(8, 8)])
    with pytest.raises(ValueError, match="NaN"):
        fuse_folder(**settings("fuse", weights=tmp_path / "nan.pth"), ir_dir=ir_dir, vi_dir=vi_dir,
                    out_dir=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_a_broken_symlink_is_reported_as_such(llvip):
    image = llvip / "visible" / "train" / "010004.jpg"
    image.unlink()
    image.symlink_to(llvip / "gone.jpg")
    report = validate_llvip(llvip, split="train", no_annotations=True)
    assert [(p.name, "broken symbolic link" in m) for p, m in report.problems] == [("010004.jpg", True)]


def test_limit_zero_is_refused(tmp_path, make_llvip):
    from mmdrfuse.fusion.train_data import open_training_patches

    store = prepare_patches(make_llvip(train=1, test=0, size=(128, 128)), **PATCHES, out=tmp_path / "store", **QUIET)
    with pytest.raises(DataError, match="--limit"):
        open_training_patches(store, None, 0)
