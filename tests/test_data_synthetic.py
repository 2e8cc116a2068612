"""SYNTHETIC LLVIP-like generator: layout, determinism, and that each modality shows what it should."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from helpers import settings, validate_llvip

from mmdrfuse.data.llvip import list_pairs, read_annotation
from mmdrfuse.data.synthetic import SCENE_OPTIONS, generate, render_pair

SIZE = (320, 256)


def scene(**overrides):
    """The scene settings of ``prepare synthetic`` (its defaults in default.yaml) with ``overrides``."""
    return {k: v for k, v in settings("prepare_synthetic", **overrides).items() if k in SCENE_OPTIONS}


def _ring_contrast(image, box, ring=0.3):
    """Mean of ``image`` inside ``box`` minus its mean over a ring ``ring * box width`` wide around it."""
    x0, y0, x1, y1 = box["xmin"], box["ymin"], box["xmax"], box["ymax"]
    pad = max(2, int(ring * (x1 - x0)))
    height, width = image.shape
    outer = image[max(0, y0 - pad) : min(height, y1 + pad), max(0, x0 - pad) : min(width, x1 + pad)].astype(float)
    inner = image[y0:y1, x0:x1].astype(float)
    return inner.mean() - (outer.sum() - inner.sum()) / (outer.size - inner.size)


@pytest.fixture(scope="module")
def scenes():
    return [render_pair(np.random.default_rng(seed), SIZE, **scene(ir_only=0.35, vi_only=0.35)) for seed in range(12)]


def test_render_is_deterministic_per_seed():
    first = render_pair(np.random.default_rng(5), SIZE, **scene())
    again = render_pair(np.random.default_rng(5), SIZE, **scene())
    other = render_pair(np.random.default_rng(6), SIZE, **scene())
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]
    assert not np.array_equal(first[1], other[1])


def test_shapes_and_boxes_look_like_pedestrians(scenes):
    kinds = set()
    for ir, vi, boxes in scenes:
        assert ir.shape == SIZE[::-1] and ir.dtype == np.uint8
        assert vi.shape == (*SIZE[::-1], 3) and vi.dtype == np.uint8
        for box in boxes:
            kinds.add(box["modality"])
            width, height = box["xmax"] - box["xmin"], box["ymax"] - box["ymin"]
            assert 0 <= box["xmin"] < box["xmax"] <= SIZE[0] and 0 <= box["ymin"] < box["ymax"] <= SIZE[1]
            assert 0.25 < width / height < 0.6  # about 1:2.5
            assert 0.15 - 0.02 <= height / SIZE[1] <= 0.4 + 0.01
    assert kinds == {"both", "ir", "vi"}


def test_infrared_shows_warm_pedestrians_except_behind_glass(scenes):
    warm, behind_glass = [], []
    for ir, _, boxes in scenes:
        for box in boxes:
            (behind_glass if box["modality"] == "vi" else warm).append(_ring_contrast(ir, box))
    assert warm and behind_glass
    assert min(warm) > 25  # grey levels brighter than their surroundings
    assert max(behind_glass) < 3  # the glass shows the background's temperature, no person


def test_visible_hides_pedestrians_in_darkness(scenes):
    dark, dark_spread, lit_spread = [], [], []
    for _, vi, boxes in scenes:
        gray = cv2.cvtColor(vi, cv2.COLOR_BGR2GRAY)
        for box in boxes:
            inside = gray[box["ymin"] : box["ymax"], box["xmin"] : box["xmax"]]
            if box["modality"] == "ir":
                dark.append((abs(_ring_contrast(gray, box)), inside.mean()))
                dark_spread.append(inside.std())  # sensor noise only
            else:
                lit_spread.append(inside.std())  # a figure against its background
    assert dark and lit_spread
    assert max(c for c, _ in dark) < 3 and max(m for _, m in dark) < 15
    assert min(lit_spread) > 3 * max(dark_spread)


def test_scene_options():
    rng = np.random.default_rng(0)
    for kind, options in (("ir", {"ir_only": 1.0, "vi_only": 0.0}), ("vi", {"ir_only": 0.0, "vi_only": 1.0}),
                          ("both", {"ir_only": 0.0, "vi_only": 0.0})):
        _, _, boxes = render_pair(rng, (640, 512), **scene(pedestrians=(3, 3), height=(0.2, 0.25), **options))
        assert [b["modality"] for b in boxes] == [kind] * 3
        assert all(0.18 <= (b["ymax"] - b["ymin"]) / 512 <= 0.26 for b in boxes)
    assert render_pair(rng, SIZE, **scene(pedestrians=(0, 0)))[2] == []
    with pytest.raises(TypeError, match="people"):
        render_pair(rng, SIZE, **scene(), people=3)
    with pytest.raises(ValueError):
        render_pair(rng, SIZE, **scene(ir_only=0.8, vi_only=0.5))


def test_generate_writes_a_valid_llvip_layout(tmp_path):
    root = generate(tmp_path / "syn", **settings("prepare_synthetic", train=3, test=2, size=(160, 128), seed=4), progress=False)
    assert "SYNTHETIC" in (root / "SYNTHETIC.md").read_text()
    report = validate_llvip(root, strict=True)
    assert len(report.ok) == 5
    truth = json.loads((root / "synthetic.json").read_text())
    assert truth["synthetic"] is True and truth["seed"] == 4
    for pair in list_pairs(root, "train") + list_pairs(root, "test"):
        ir = cv2.imread(str(pair.ir), cv2.IMREAD_UNCHANGED)
        assert ir.shape == (128, 160, 3)
        assert np.abs(ir.astype(int) - ir[..., :1]).max() <= 2  # gray stored in 3 channels, like LLVIP
        annotation = read_annotation(pair.annotation)
        assert annotation.boxes.tolist() == [[b[k] for k in ("xmin", "ymin", "xmax", "ymax")]
                                             for b in truth["pairs"][pair.id]["boxes"]]
        assert "SYNTHETIC" in pair.annotation.read_text()


def test_generate_is_deterministic_and_a_pair_does_not_depend_on_the_count(tmp_path):
    small = generate(tmp_path / "a", **settings("prepare_synthetic", train=2, test=0, size=(96, 96), seed=1), progress=False)
    large = generate(tmp_path / "b", **settings("prepare_synthetic", train=3, test=1, size=(96, 96), seed=1), progress=False)
    for name in ("infrared/train/010001.jpg", "visible/train/010002.jpg", "Annotations/010002.xml"):
        assert (small / name).read_bytes() == (large / name).read_bytes()
