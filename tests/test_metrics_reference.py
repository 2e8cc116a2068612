"""The fast metrics equal a straightforward reference to 1e-6 (the requirement is 1e-3).

The reference (``reference_metrics.py`` beside this file) follows the conventions of the Python
evaluator that fusion papers copy. Where a library computes the same number (scikit-image SSIM
and entropy) the reference uses the library.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import shared_path
from reference_metrics import REFERENCE

from mmdrfuse.data.io import match_pairs, read_gray
from mmdrfuse.metrics import ALL_METRICS, evaluate_pair

pytest.importorskip("skimage.metrics")
pytest.importorskip("scipy.signal")
skimage_measure = pytest.importorskip("skimage.measure")


def _texture(rng, shape, blur):
    noise = cv2.GaussianBlur(rng.random(shape) * 255, (0, 0), blur)
    return np.clip((noise - noise.mean()) * 6 + 128, 0, 255).round().astype(np.uint8)


def _synthetic_triples():
    rng = np.random.default_rng(0)
    shape = (67, 93)  # odd sizes exercise the subsampling and band edges
    yield "random", *(rng.integers(0, 256, shape).astype(np.uint8) for _ in range(3))
    a, b = _texture(rng, shape, 2.0), _texture(rng, shape, 3.0)
    yield "max-fusion with saturation", np.maximum(a, b), a, b
    # flat regions (black and white) exercise VIF's variance clamps and Qabf's zero gradients
    a2, b2 = a.copy(), b.copy()
    a2[:30, :40], b2[:30, :40], a2[40:, 50:] = 0, 0, 255
    fused = ((a2.astype(np.float64) + b2) / 2).round().astype(np.uint8)
    yield "average with flat blocks", fused, a2, b2


@pytest.mark.parametrize("name,fused,ir,vi", list(_synthetic_triples()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_metric_equals_reference_on_synthetic_images(name, fused, ir, vi):
    ours = evaluate_pair(fused, ir, vi)
    assert tuple(ours) == ALL_METRICS
    f, a, b = (x.astype(np.float64) for x in (fused, ir, vi))
    for metric, value in ours.items():
        assert value == pytest.approx(REFERENCE[metric](f, a, b), abs=1e-6), metric


def test_non_integer_float_input_equals_reference():
    rng = np.random.default_rng(1)
    a, b = _texture(rng, (50, 60), 1.5), _texture(rng, (50, 60), 2.5)
    fused = 0.3 * a + 0.7 * b  # fractional values: MI bins every distinct value, EN rounds
    ours = evaluate_pair(fused, a.astype(np.float32), b)
    f, a64, b64 = fused, a.astype(np.float64), b.astype(np.float64)
    for metric, value in ours.items():
        assert value == pytest.approx(REFERENCE[metric](f, a64, b64), abs=1e-6), metric


def test_every_metric_equals_reference_on_a_real_pair():
    folder = shared_path("datasets", "RoadScene")
    pairs, _ = match_pairs(folder / "ir", folder / "vi")
    _, ir_path, vi_path = pairs[0]
    ir, vi = read_gray(ir_path), read_gray(vi_path)
    fused = np.maximum(ir, vi)
    ours = evaluate_pair(fused, ir, vi)
    f, a, b = (x.astype(np.float64) for x in (fused, ir, vi))
    for metric, value in ours.items():
        assert value == pytest.approx(REFERENCE[metric](f, a, b), abs=1e-6), metric


def test_entropy_equals_scikit_image_shannon_entropy():
    rng = np.random.default_rng(2)
    image = _texture(rng, (40, 50), 1.0)
    expected = skimage_measure.shannon_entropy(image, base=2)
    assert evaluate_pair(image, image, image, ["EN"])["EN"] == pytest.approx(expected, abs=1e-12)
