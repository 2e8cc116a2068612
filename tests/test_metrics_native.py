"""The C symmetric filter behind the CPU paths of VIF and SSIM: against OpenCV, and the fallback without it."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mmdrfuse import native
from mmdrfuse.metrics import METRICS, native_filter
from mmdrfuse.metrics.filters import gaussian_kernel_1d
from mmdrfuse.metrics.ssim import ssim, ssim_means_numpy
from mmdrfuse.metrics.vif import visual_information_fidelity


@pytest.fixture
def kernel_built():
    if not native_filter.available():
        pytest.skip("the C filter does not build here (no compiler, or MMDRFUSE_NO_NATIVE)")


@pytest.fixture
def without_native(monkeypatch):
    """The C filter disabled the way users disable it, for the duration of a test."""
    monkeypatch.setattr(native_filter, "_library", {})
    monkeypatch.setenv("MMDRFUSE_NO_NATIVE", "1")
    assert not native_filter.available()


def _opencv_valid(plane, kernel):
    r = kernel.shape[0] // 2
    full = cv2.sepFilter2D(plane, cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_REPLICATE)
    return full[r : plane.shape[0] - r, r : plane.shape[1] - r]


# radius 9 takes the generic (not unrolled) path; widths that are not a multiple of the strip
@pytest.mark.parametrize("size", [3, 5, 7, 9, 17, 19])
@pytest.mark.parametrize("step", [1, 2])
def test_local_moments_match_opencv(kernel_built, size, step):
    rng = np.random.default_rng(size * 10 + step)
    shape = (size + 40, 300 + size)
    a, b = rng.random(shape) * 255 - 20, rng.random(shape) * 255
    kernel = gaussian_kernel_1d(size, size / 5.0).numpy()
    expected = [_opencv_valid(plane, kernel)[::step, ::step] for plane in (a, a * a, a * b)]
    outputs = [np.full(expected[0].shape, np.nan) for _ in range(3)]
    assert native_filter.local_moments(a, b, kernel, outputs, step=step)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    mean_only = [np.full(expected[0].shape, np.nan)]
    assert native_filter.local_moments(a, None, kernel, mean_only, step=step)
    np.testing.assert_array_equal(mean_only[0], outputs[0])


def test_local_moments_into_strided_views(kernel_built):
    """Row bands of a bigger image in, the 'valid' window of full-size buffers out (VIF's use)."""
    rng = np.random.default_rng(3)
    image, other = rng.integers(0, 256, (2, 60, 200)).astype(np.float64)
    kernel = gaussian_kernel_1d(9, 1.8).numpy()
    band, other_band = image[10:40], other[10:40]
    buffers = np.zeros((3, 40, 200))
    valid = [plane[4:26, 4:196] for plane in buffers]
    assert native_filter.local_moments(band, other_band, kernel, valid)
    np.testing.assert_allclose(valid[2], _opencv_valid(band * other_band, kernel), rtol=1e-12)
    assert not buffers[:, 26:].any() and not buffers[:, :, :4].any() and not buffers[:, :, 196:].any()


def test_local_moments_reject_bad_arguments(kernel_built):
    a = np.zeros((20, 20))
    out = [np.empty((16, 16))]
    with pytest.raises(ValueError, match="symmetric"):
        native_filter.local_moments(a, None, np.array([0.2, 0.3, 0.5, 0.0, 0.0]), out)
    with pytest.raises(ValueError, match="outputs"):
        native_filter.local_moments(a, None, np.full(5, 0.2), [np.empty((16, 15))])
    with pytest.raises(ValueError, match="inputs"):
        native_filter.local_moments(a.astype(np.float32), None, np.full(5, 0.2), out)
    with pytest.raises(ValueError, match="3 with b"):
        native_filter.local_moments(a, None, np.full(5, 0.2), out * 3)
    with pytest.raises(ValueError, match="smaller"):
        native_filter.local_moments(np.zeros((4, 20)), None, np.full(5, 0.2), out)


def _vif_inputs():
    rng = np.random.default_rng(7)
    ir = cv2.GaussianBlur(rng.random((120, 150)) * 255, (0, 0), 2.0)
    vi = rng.integers(0, 256, (120, 150)).astype(np.float64)
    vi[:40, :60] = 90.0  # flat: exercises the sigma^2 < eps clamps
    fused = np.round((ir + vi) / 2)
    return [torch.from_numpy(image)[None, None] for image in (fused, np.round(ir), vi)]


def test_vif_same_with_and_without_the_c_filter(kernel_built, monkeypatch):
    fused, ir, vi = _vif_inputs()
    with torch.no_grad():
        with_c = visual_information_fidelity([ir, vi], fused)
        with_c_sum = METRICS["VIF"](fused, ir, vi)
        monkeypatch.setattr(native_filter, "_library", {"library": None})
        without_c = visual_information_fidelity([ir, vi], fused)
        without_c_sum = METRICS["VIF"](fused, ir, vi)
    assert torch.all(with_c > 0.05)  # a real signal, not two zeros
    torch.testing.assert_close(with_c, without_c, rtol=0, atol=1e-9)
    torch.testing.assert_close(with_c_sum, without_c_sum, rtol=0, atol=1e-9)


def test_ssim_same_with_and_without_the_c_filter(kernel_built, monkeypatch):
    fused, ir, vi = _vif_inputs()
    unit = [image / 255 for image in (fused, ir)]
    with torch.no_grad():
        with_c = METRICS["SSIM"](fused, ir, vi), ssim(*unit), ssim(fused, ir, window="uniform", window_size=7)
        monkeypatch.setattr(native_filter, "_library", {"library": None})
        without_c = METRICS["SSIM"](fused, ir, vi), ssim(*unit), ssim(fused, ir, window="uniform", window_size=7)
    for got, want in zip(with_c, without_c):
        assert torch.all(want > 0.1)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_vif_falls_back_to_opencv(without_native):
    fused, ir, vi = _vif_inputs()
    with torch.no_grad():
        cpu = visual_information_fidelity([ir, vi], fused)
    # the torch path (taken under autograd) shares no code with the CPU path's filters
    torch_path = visual_information_fidelity([ir, vi], fused.clone().requires_grad_(True))
    torch.testing.assert_close(cpu, torch_path, rtol=0, atol=1e-6)


def test_no_compiler_means_no_kernel(monkeypatch, tmp_path):
    monkeypatch.setattr(native_filter, "_library", {})
    monkeypatch.setattr(native, "find_compiler", lambda: None)
    monkeypatch.setenv("MMDRFUSE_CACHE", str(tmp_path))
    assert not native_filter.available()
    assert not native_filter.local_moments(np.zeros((9, 9)), None, np.full(3, 1 / 3), [np.empty((7, 7))])
    assert not any(tmp_path.iterdir())


def test_kernel_builds_into_an_empty_cache(monkeypatch, tmp_path):
    if native.find_compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setattr(native_filter, "_library", {})
    monkeypatch.delenv("MMDRFUSE_NO_NATIVE", raising=False)
    monkeypatch.setenv("MMDRFUSE_CACHE", str(tmp_path / "cache"))
    assert native_filter.available()
    built = list((tmp_path / "cache").iterdir())
    assert len(built) == 1 and built[0].name.startswith("symmetric_filter-") and built[0].suffix == ".so"


def test_an_edited_kernel_is_rebuilt_not_loaded_stale(monkeypatch, tmp_path):
    """The cache key covers the C text: a changed kernel gets its own library, and that one is loaded."""
    if native.find_compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.delenv("MMDRFUSE_NO_NATIVE", raising=False)
    monkeypatch.setenv("MMDRFUSE_CACHE", str(tmp_path))
    plane, kernel = np.random.default_rng(3).random((12, 14)), np.array([0.25, 0.5, 0.25])

    def mean_of_plane():
        monkeypatch.setattr(native_filter, "_library", {})
        out = np.empty((10, 12))
        assert native_filter.local_moments(plane, None, kernel, [out])
        return out

    original = mean_of_plane()
    source = native_filter.kernel_source()
    assert source.count("h[x] = acc;") == 1
    monkeypatch.setattr(native_filter, "kernel_source", lambda: source.replace("h[x] = acc;", "h[x] = 2.0 * acc;"))
    np.testing.assert_allclose(mean_of_plane(), 2 * original, rtol=1e-15)
    assert len(list(tmp_path.glob("symmetric_filter-*.so"))) == 2


def test_ssim_means_of_one_reference_equal_ssim_of_each_pair():
    """The CPU path's public entry (VIFB's SSIM calls it): x's statistics shared, the means of ssim()."""
    rng = np.random.default_rng(7)
    x, *ys = (rng.integers(0, 256, (40, 37)).astype(np.float64) for _ in range(3))
    options = (255.0, "gaussian", 11, 1.5, 0.01, 0.03, False)
    means = ssim_means_numpy(x, ys, *options)
    as_tensor = lambda a: torch.from_numpy(a)[None, None]  # noqa: E731
    expected = [float(ssim(as_tensor(x), as_tensor(y), data_range=255.0)) for y in ys]
    np.testing.assert_allclose(means, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="one shape"):
        ssim_means_numpy(x, [ys[0][:-1]], *options)
    with pytest.raises(ValueError, match="float64"):
        ssim_means_numpy(x.astype(np.float32), ys, *options)
