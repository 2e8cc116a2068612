"""Hand-computable values, symmetries and the documented values of degenerate inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmdrfuse.metrics import ALL_METRICS, METRICS, PAPER_METRICS, evaluate_batch, evaluate_pair, filters
from mmdrfuse.metrics.gmsd import gmsd
from mmdrfuse.metrics.source_referenced import mutual_information
from mmdrfuse.metrics.ssim import ssim


def _texture(seed, shape=(48, 64)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, shape).astype(np.uint8)


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_metric_tuples():
    assert PAPER_METRICS == ("SD", "SCD", "VIF", "Qabf", "SSIM", "CC")
    assert set(PAPER_METRICS) < set(ALL_METRICS) and len(ALL_METRICS) == 12


def test_identical_images():
    image = _texture(0)
    m = evaluate_pair(image, image, image)
    assert m["SSIM"] == pytest.approx(2.0, abs=1e-12)
    assert m["CC"] == pytest.approx(1.0, abs=1e-12)
    assert m["VIF"] == pytest.approx(2.0, abs=1e-6)  # g = s1 / (s1 + 1e-10), not exactly 1
    assert m["MSE"] == 0.0 and m["PSNR"] == math.inf
    assert m["SCD"] == 0.0  # F - B = 0 is constant: r defined as 0
    # MI(F; F) is the entropy of F in nats
    assert m["MI"] == pytest.approx(2 * m["EN"] * math.log(2), abs=1e-9)
    # Qabf: orientations agree (A = 1) and g_A = g_F gives G = g_F >= 1 for 8-bit images
    upper = 0.9994 * 0.9879 * _sigmoid(22 * 0.2)
    assert upper * _sigmoid(15 * 0.5) <= m["Qabf"] <= upper


def test_two_level_image_statistics():
    image = np.zeros((32, 32), np.uint8)
    image[:, 16:] = 255
    m = evaluate_pair(image, image, image, ["SD", "EN", "SF"])
    assert m["SD"] == pytest.approx(127.5)
    assert m["EN"] == pytest.approx(1.0)
    assert m["SF"] == pytest.approx(math.sqrt(255.0**2 / 31))  # one edge among 31 horizontal neighbours per row


def test_ramp_gradients():
    ramp = np.tile(np.arange(0, 200, 4, dtype=np.uint8), (30, 1))  # F(i, j) = 4 j
    m = evaluate_pair(ramp, ramp, ramp, ["SF", "AG"])
    assert m["SF"] == pytest.approx(4.0)
    assert m["AG"] == pytest.approx(4.0 / math.sqrt(2))


def test_known_shift():
    source = np.clip(_texture(1).astype(np.float64) * 0.5 + 40, 0, 255).round()
    shifted = source + 30
    m = evaluate_pair(shifted, source, source)
    assert m["CC"] == pytest.approx(1.0, abs=1e-12)
    assert m["MSE"] == pytest.approx(900.0)
    assert m["PSNR"] == pytest.approx(10 * math.log10(shifted.max() ** 2 / 900.0))
    base = evaluate_pair(source, source, source, ["SD", "EN", "SF", "AG"])
    for name, value in base.items():
        assert m[name] == pytest.approx(value, abs=1e-9), name


def test_constant_images_give_documented_values_not_nan():
    flat = np.full((48, 64), 100, np.uint8)
    texture = _texture(2)
    constant_fused = evaluate_pair(flat, texture, _texture(3))
    assert all(math.isfinite(v) for v in constant_fused.values())
    assert constant_fused["SD"] == constant_fused["EN"] == constant_fused["SF"] == constant_fused["AG"] == 0.0
    assert constant_fused["CC"] == 0.0  # correlation with a constant image is defined as 0
    assert constant_fused["VIF"] == 0.0  # sigma_F^2 < eps everywhere: g = 0
    assert constant_fused["MI"] == 0.0
    constant_sources = evaluate_pair(texture, flat, flat)
    assert constant_sources["VIF"] == 2.0  # denominator 0: the evaluator's NaN -> 1 rule, per source
    assert constant_sources["CC"] == 0.0 and constant_sources["SCD"] == 0.0
    # zero padding gives a constant image edges on its border; black sources have none at all
    black = np.zeros_like(flat)
    assert evaluate_pair(texture, black, black, ["Qabf"])["Qabf"] == 0.0  # 0 / 0: defined as 0
    all_flat = evaluate_pair(flat, flat, flat)
    assert all_flat["SSIM"] == pytest.approx(2.0) and all_flat["PSNR"] == math.inf


def test_black_fused_image_has_minus_infinite_psnr():
    m = evaluate_pair(np.zeros((20, 20), np.uint8), _texture(4, (20, 20)), _texture(5, (20, 20)), ["PSNR"])
    assert m["PSNR"] == -math.inf


def test_metrics_are_symmetric_in_the_sources():
    fused, ir, vi = _texture(6), _texture(7), _texture(8)
    forward, swapped = evaluate_pair(fused, ir, vi), evaluate_pair(fused, vi, ir)
    for name in ALL_METRICS:
        assert forward[name] == pytest.approx(swapped[name], abs=1e-12), name
    x, y = (torch.from_numpy(t.astype(np.float64))[None, None] for t in (ir, vi))
    # I(x; y) = I(y; x): with both sources equal, MI = 2 I(F; A)
    assert torch.allclose(mutual_information(x, y, y), mutual_information(y, x, x))


def test_batch_equals_single_images_and_torch_path_equals_opencv_path(monkeypatch):
    images = [torch.from_numpy(np.stack([_texture(s), _texture(s + 10), _texture(s + 20)]).astype(np.float64)) for s in (0, 1)]
    singles = [evaluate_batch(i[None, 0:1], i[None, 1:2], i[None, 2:3]) for i in images]
    batch = torch.stack(images)
    batched = evaluate_batch(batch[:, 0:1], batch[:, 1:2], batch[:, 2:3])
    # The CUDA code path (whole-image torch convolutions), run here on the CPU.
    monkeypatch.setattr(filters, "use_opencv", lambda images: False)
    torch_path = evaluate_batch(batch[:, 0:1], batch[:, 1:2], batch[:, 2:3])
    for name in ALL_METRICS:
        expected = torch.cat([single[name] for single in singles])
        assert torch.allclose(batched[name], expected, atol=1e-9, rtol=0), name
        assert torch.allclose(torch_path[name], expected, atol=1e-6, rtol=0), name


def test_band_boundaries_do_not_change_results(monkeypatch):
    fused, ir, vi = _texture(9, (90, 70)), _texture(10, (90, 70)), _texture(11, (90, 70))
    whole = evaluate_pair(fused, ir, vi)
    monkeypatch.setattr(filters, "BAND_PIXELS", 70 * 8)  # 8-row bands
    banded = evaluate_pair(fused, ir, vi)
    for name in ALL_METRICS:
        assert banded[name] == pytest.approx(whole[name], abs=1e-9), name


def test_shapes_are_checked():
    image = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        METRICS["CC"](image, image, torch.zeros(1, 1, 64, 63, dtype=torch.float64))
    with pytest.raises(ValueError):
        METRICS["SD"](torch.zeros(64, 64, dtype=torch.float64), image, image)
    with pytest.raises(ValueError, match="smaller"):
        METRICS["VIF"](*(torch.zeros(1, 1, 40, 64, dtype=torch.float64),) * 3)
    with pytest.raises(ValueError, match="sizes differ"):
        evaluate_pair(np.zeros((50, 50)), np.zeros((50, 50)), np.zeros((50, 51)))
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_pair(np.zeros((50, 50)), np.zeros((50, 50)), np.zeros((50, 50)), ["SD", "FMI"])


def test_refresh_ssim_and_gmsd_stay_differentiable_and_match_the_fast_path():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    with_grad = ssim(x, y)  # torch convolution path (autograd)
    (with_grad.sum() + gmsd(x, y).sum()).backward()
    assert with_grad.shape == (2,) and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.allclose(with_grad.detach(), ssim(x.detach(), y), atol=1e-12)  # OpenCV path


def test_8bit_fast_paths_equal_the_float_paths(monkeypatch):
    """SSIM, EN and MI read 8-bit images through OpenCV's integer filters and histograms; the
    float paths (any other input) must give the same numbers."""
    fused, ir, vi = _texture(12, (70, 90)), _texture(13, (70, 90)), _texture(14, (70, 90))
    fused[:20, :30] = 255  # saturated and flat blocks
    ir[40:, 50:] = 0
    fast = evaluate_pair(fused, ir, vi)
    monkeypatch.setattr(filters, "uint8_if_exact", lambda image: None)
    slow = evaluate_pair(fused, ir, vi)
    for name in ALL_METRICS:
        assert fast[name] == pytest.approx(slow[name], abs=1e-9), name


def test_out_of_range_values_do_not_take_the_8bit_path():
    # 300 and -5 would wrap in uint8: MI must bin every distinct value as it is.
    x = torch.tensor([[0.0, 300.0, -5.0, 300.0]], dtype=torch.float64).reshape(1, 1, 2, 2)
    y = torch.tensor([[0.0, 44.0, 251.0, 44.0]], dtype=torch.float64).reshape(1, 1, 2, 2)
    # y determines x: the mutual information is the entropy of y, {0: 1/4, 44: 1/2, 251: 1/4} in nats
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert float(METRICS["MI"](x, y, y)[0]) == pytest.approx(2 * expected, abs=1e-12)
