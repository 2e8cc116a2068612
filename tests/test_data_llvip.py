"""LLVIP reader and validator: pairs, annotations, and the bad inputs a user brings."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import shared_path
from helpers import run_data_cli, validate_llvip

from mmdrfuse.data.io import image_size
from mmdrfuse.data.llvip import list_pairs, read_annotation, read_pair
from mmdrfuse.errors import DataError


@pytest.fixture
def llvip(make_llvip):
    """A small SYNTHETIC LLVIP-like folder (4 train + 2 test pairs, 160x128), fresh for each test."""
    return make_llvip(train=4, test=2, size=(160, 128), seed=3)


def test_list_pairs_and_annotations_match_the_generator(llvip):
    pairs = list_pairs(llvip, "train")
    assert [p.id for p in pairs] == ["010001", "010002", "010003", "010004"]
    assert [p.id for p in list_pairs(llvip, "test")] == ["190001", "190002"]
    truth = json.loads((llvip / "synthetic.json").read_text())["pairs"]
    for pair in pairs:
        annotation = read_annotation(pair.annotation)
        assert (annotation.width, annotation.height) == (160, 128)
        expected = [[b["xmin"], b["ymin"], b["xmax"], b["ymax"]] for b in truth[pair.id]["boxes"]]
        np.testing.assert_array_equal(annotation.boxes, np.array(expected, float).reshape(-1, 4))
        assert annotation.labels == ["person"] * len(expected)
    ir, vi = read_pair(pairs[0], color=True)
    assert ir.shape == (128, 160) and vi.shape == (128, 160, 3)


def test_real_annotation_010005():
    path = shared_path("datasets", "LLVIP-samples", "Annotations", "010005.xml")
    annotation = read_annotation(path)
    assert (annotation.width, annotation.height) == (1280, 1024)
    np.testing.assert_array_equal(
        annotation.boxes, [[849, 405, 961, 663], [974, 133, 1076, 363], [1155, 39, 1256, 270]]
    )


def test_real_samples_validate_counts_missing_annotations():
    root = shared_path("datasets", "LLVIP-samples")
    report = validate_llvip(root)
    assert report.splits == ["train"] and report.checked == 32
    assert [p.id for p in report.ok] == ["010005"]
    assert report.missing_annotations == 31 and "31 pair(s) without annotation" in report.summary()
    assert len(validate_llvip(root, no_annotations=True).ok) == 32


def test_clean_folder_validates(llvip):
    report = validate_llvip(llvip)
    assert report.problems == [] and len(report.ok) == 6 and report.splits == ["train", "test"]


def test_missing_partner_is_skipped_or_fatal_when_strict(llvip):
    (llvip / "visible" / "train" / "010002.jpg").unlink()
    report = validate_llvip(llvip, split="train")
    assert "010002" not in [p.id for p in report.ok] and len(report.ok) == 3
    assert [(f.name, "partner" in m) for f, m in report.problems] == [("010002.jpg", True)]
    with pytest.raises(DataError, match="010002.jpg"):
        validate_llvip(llvip, split="train", strict=True)


def test_malformed_xml(llvip):
    (llvip / "Annotations" / "010003.xml").write_text("<annotation><object><name>person")
    report = validate_llvip(llvip, split="train")
    assert [p.id for p in report.ok] == ["010001", "010002", "010004"]
    assert report.problems[0][0].name == "010003.xml"
    with pytest.raises(DataError, match="010003.xml"):
        validate_llvip(llvip, split="train", strict=True)
    with pytest.raises(DataError, match="010003.xml"):
        read_annotation(llvip / "Annotations" / "010003.xml")


def test_non_numeric_coordinate_names_the_file(llvip):
    xml = llvip / "Annotations" / "010001.xml"
    xml.write_text(xml.read_text().replace("<xmin>", "<xmin>abc", 1))
    with pytest.raises(DataError, match="010001.xml.*abc"):
        read_annotation(xml)


def _rewrite_first_box(xml, **coordinates):
    text = xml.read_text()
    for tag, value in coordinates.items():
        start = text.index(f"<{tag}>") + len(tag) + 2
        text = text[:start] + str(value) + text[text.index(f"</{tag}>"):]
    xml.write_text(text)


@pytest.mark.parametrize("coordinates, message", [({"xmax": 170}, "outside"), ({"xmin": 50, "xmax": 50}, "empty")])
def test_bad_boxes(llvip, coordinates, message):
    pair = next(p for p in list_pairs(llvip, "train") if read_annotation(p.annotation).boxes.size)
    _rewrite_first_box(pair.annotation, **coordinates)
    report = validate_llvip(llvip, split="train")
    assert pair.id not in [p.id for p in report.ok]
    assert any(f == pair.annotation and message in m for f, m in report.problems)
    assert pair.id in [p.id for p in validate_llvip(llvip, split="train", no_annotations=True).ok]


def test_size_mismatch(llvip):
    vi = llvip / "visible" / "test" / "190002.jpg"
    cv2.imwrite(str(vi), np.zeros((100, 160, 3), np.uint8))
    report = validate_llvip(llvip, split="test", no_annotations=True)
    assert [p.id for p in report.ok] == ["190001"]
    assert report.problems[0][0] == vi and "size mismatch" in report.problems[0][1]
    with pytest.raises(DataError, match="size mismatch"):
        read_pair(list_pairs(llvip, "test")[1])


def test_empty_and_wrong_folders(tmp_path):
    with pytest.raises(DataError, match="not an LLVIP folder"):
        validate_llvip(tmp_path)
    for modality in ("infrared", "visible"):
        (tmp_path / modality / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        validate_llvip(tmp_path)
    with pytest.raises(DataError, match="no train pairs"):
        list_pairs(tmp_path, "train")
    with pytest.raises(DataError, match="does not exist"):
        list_pairs(tmp_path / "absent", "train")


@pytest.mark.parametrize("ext, params", [(".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".png", []), (".bmp", [])])
def test_image_size_reads_headers(tmp_path, ext, params):
    path = tmp_path / f"image{ext}"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8), params)
    assert image_size(path) == (53, 37)


def test_image_size_of_corrupt_file_names_it(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0garbage")
    with pytest.raises(DataError, match="broken.jpg"):
        image_size(path)


def test_validate_command_reports_and_exits_nonzero_on_problems(llvip, tmp_path, capsys):
    assert run_data_cli(["validate", "--root", str(llvip), "--quiet"]) == 0
    (llvip / "infrared" / "test" / "190001.jpg").unlink()
    report = tmp_path / "report.json"
    assert run_data_cli(["validate", "--root", str(llvip), "--quiet", "--json", str(report)]) == 1
    assert "190001.jpg: no infrared partner" in capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["checked"] == 5 and data["ok"] == 5 and data["problems"][0]["file"].endswith("190001.jpg")
    with pytest.raises(DataError, match="190001.jpg"):
        run_data_cli(["validate", "--root", str(llvip), "--strict", "--quiet"])


def test_unreadable_image_is_reported_with_its_name(llvip):
    broken = llvip / "visible" / "train" / "010004.jpg"
    broken.write_bytes(b"not an image")
    report = validate_llvip(llvip, split="train", no_annotations=True)
    assert [p.id for p in report.ok] == ["010001", "010002", "010003"]
    assert report.problems[0][0] == broken and "010004.jpg" in report.problems[0][1]
