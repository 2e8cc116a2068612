"""The C kernels of Qcb and Qcv (mmdrfuse/metrics/vifb/chen_kernels.c) against the NumPy path they
replace, and the NumPy fallback without them (MMDRFUSE_NO_NATIVE, or no compiler)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from reference_vifb import REFERENCE

from mmdrfuse import native
from mmdrfuse.metrics.vifb import chen, chen_native
from mmdrfuse.metrics.vifb.channels import channel_triples
from mmdrfuse.metrics.vifb.scores import _share_equal


@pytest.fixture
def kernel_built():
    if not chen_native.available():
        pytest.skip("the C kernels do not build here (no compiler, or MMDRFUSE_NO_NATIVE)")


@pytest.fixture
def numpy_path(monkeypatch):
    """The NumPy fallback, as without a compiler, for the duration of a test."""
    monkeypatch.setattr(chen_native, "_library", {"library": None})
    assert not chen_native.available()


def _texture(seed: int, shape, colour: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random(shape + ((3,) if colour else ())) * 255, (0, 0), 1.5)
    return np.clip((noise - noise.mean()) * 6 + 128, 0, 255).round().astype(np.uint8)


def _numpy_contrast_power(image: np.ndarray) -> np.ndarray:
    """C' with OpenCV's zero-padded 31x31 filters in space (the NumPy path below the spectral size)."""
    narrow, wide = (chen._zero_padded_filter(image, taps) for taps in (chen.TAPS_2, chen.TAPS_4))
    contrast = np.abs(narrow / wide * chen.SCALE_RATIO - 1)
    return contrast**3 / (contrast**2 + 1e-4)


# Below the 31-tap window, below 15 rows (no row has all 31 input rows), odd, and not strip multiples.
@pytest.mark.parametrize("shape", [(11, 13), (20, 40), (37, 53), (66, 75), (130, 300)])
def test_contrast_power_equals_the_zero_padded_filters(kernel_built, shape):
    filtered = cv2.GaussianBlur(np.random.default_rng(shape[1]).random(shape) * 255, (0, 0), 1.0) - 60
    out = np.full(shape, np.nan)
    assert chen_native.contrast_power(filtered, chen.TAPS_2, chen.TAPS_4, chen.SCALE_RATIO, out)
    want = _numpy_contrast_power(filtered)
    # C = |r G2 / G4 - 1| cancels where G2 r ~ G4 (there 1e-10 relative apart): compare on the scale
    # of the plane (measured: 3e-15 of the largest value)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-14 * np.abs(want).max())
    assert np.isfinite(out).all() and out.std() > 0


def test_contrast_power_reads_a_strided_view(kernel_built):
    big = np.random.default_rng(5).random((50, 90)) * 255
    view, out, copy = big[5:45, 10:80], np.empty((40, 70)), np.empty((40, 70))
    assert chen_native.contrast_power(view, chen.TAPS_2, chen.TAPS_4, chen.SCALE_RATIO, out)
    assert chen_native.contrast_power(np.ascontiguousarray(view), chen.TAPS_2, chen.TAPS_4, chen.SCALE_RATIO, copy)
    np.testing.assert_array_equal(out, copy)


def test_chen_blum_sum_equals_numpy_and_keeps_the_nan_rule(kernel_built):
    rng = np.random.default_rng(2)
    shape = (33, 47)
    c1, c2, cf = (rng.random(shape) * 3 for _ in range(3))
    c2[:5] = cf[:5]  # ties: min = max
    planes = chen._Planes(shape)
    total, zero = chen_native.chen_blum_sum(c1, c2, cf)
    assert not zero and total / c1.size == pytest.approx(chen._chen_blum_numpy(c1, c2, cf, planes), rel=1e-14)
    for plane in (c1, c2, cf):
        saved = plane[7, 9]
        plane[7, 9] = 0.0
        assert chen_native.chen_blum_sum(c1, c2, cf)[1] and math.isnan(chen.chen_blum(c1, c2, cf, planes))
        plane[7, 9] = math.nan
        total, zero = chen_native.chen_blum_sum(c1, c2, cf)
        assert math.isnan(total) and not zero and math.isnan(chen._chen_blum_numpy(c1, c2, cf, planes))
        plane[7, 9] = saved


@pytest.mark.parametrize("shape", [(16, 32), (37, 53), (481, 639)])
def test_block_square_sums_equal_numpy(kernel_built, shape):
    plane = np.random.default_rng(3).standard_normal(shape) * 40
    np.testing.assert_allclose(chen_native.block_square_sums(plane), chen._block_sums(plane**2), rtol=1e-14)


@pytest.mark.parametrize("shape", [(11, 12), (37, 53), (64, 80)])
def test_saliency_sums_equal_numpy(kernel_built, shape):
    image = _texture(shape[0], shape)
    image[:3, :3], image[-1, -1] = 255, 0  # the largest Sobel values, in the corner (zero padding)
    checker = (np.indices(shape).sum(0) % 2 * 255).astype(np.uint8)
    planes = chen._Planes(shape)
    for picture in (image, checker, np.zeros(shape, np.uint8)):
        want = chen._saliency_numpy(picture, planes)
        np.testing.assert_allclose(chen_native.saliency_sums(picture), want, rtol=1e-14)
    assert want.shape == (-(-shape[0] // 16), -(-shape[1] // 16))


@pytest.mark.parametrize("shape", [(6, 8), (7, 9), (6, 9), (7, 8), (48, 35)])
def test_ccs_multiplier_multiplies_every_frequency(shape):
    """Against cv2.mulSpectrums with the packed DFT of the response's kernel, on every parity of
    (H, W): a slot given another frequency's response would be off by far more than rounding."""
    rng = np.random.default_rng(sum(shape))
    spectrum = cv2.dft(rng.random(shape))
    radius = chen._radius(*shape, 3.0)
    response = np.exp(-radius)  # real and even, and different at every frequency radius
    want = cv2.mulSpectrums(spectrum, cv2.dft(np.fft.ifft2(response).real), 0)
    np.testing.assert_allclose(spectrum * chen.ccs_multiplier(response), want, rtol=0, atol=1e-15 * np.abs(want).max())
    assert np.abs(want).max() > 0.1


def test_difference_product_equals_numpy_bit_for_bit(kernel_built):
    rng = np.random.default_rng(4)
    a, f, m = (rng.standard_normal((33, 47)) * 1e3 for _ in range(3))
    out = np.empty_like(a)
    assert chen_native.difference_product(a, f, m, out)
    np.testing.assert_array_equal(out, (a - f) * m)
    with pytest.raises(ValueError, match="C-contiguous"):
        chen_native.difference_product(a, f, m.T.copy().T, out)


def _scores(vi, ir, fused):
    return chen.chen_metrics(_share_equal(channel_triples(vi, ir, fused)), ("Qcb", "Qcv"))


# (shape, colour, infrared: "rgb" its own three channels, "repeated" gray stored as RGB, "gray")
CASES = {
    "partial blocks, below the spectral size": ((37, 53), True, "rgb"),
    "gray infrared stored as RGB": ((40, 45), True, "repeated"),
    "frequency-domain Gaussians in the NumPy path": ((66, 75), True, "rgb"),
    "gray": ((70, 96), False, "gray"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_c_path_equals_numpy_path(kernel_built, monkeypatch, case):
    shape, colour, infrared = CASES[case]
    vi, fused = _texture(1, shape, colour), _texture(3, shape, colour)
    ir = _texture(2, shape, infrared == "rgb")
    if infrared == "repeated":
        ir = np.repeat(ir[..., None], 3, axis=2)
    with_c = _scores(vi, ir, fused)
    monkeypatch.setattr(chen_native, "_library", {"library": None})
    without_c = _scores(vi, ir, fused)
    assert len(with_c) == (3 if colour else 1)
    for got, want in zip(with_c, without_c):
        # Summation orders differ; above the spectral size the NumPy path also applies the Gaussians in
        # the frequency domain (rounded differently). Measured: 2e-15 here, 6e-15 on VIFB's labMan.
        for name in ("Qcb", "Qcv"):
            assert got[name] == pytest.approx(want[name], rel=1e-14), name


def test_planes_kept_between_calls_carry_nothing_over():
    """The full-size planes are reused from call to call (per thread, per shape): a value must not
    depend on what the previous call left in them (A, then B, then A again; B also in a fresh thread)."""
    import threading

    shape = (70, 83)
    first = [_texture(seed, shape, True) for seed in (1, 2, 3)]
    second = [_texture(seed, shape, True) for seed in (4, 5, 6)]
    second[1] = np.repeat(second[1][..., :1], 3, axis=2)  # fewer distinct images than the first call
    a1, b, a2 = _scores(*first), _scores(*second), _scores(*first)
    assert a1 == a2 and a1 != b
    fresh = []
    thread = threading.Thread(target=lambda: fresh.append(_scores(*second)))
    thread.start()
    thread.join()
    assert fresh == [b]
    assert chen._per_thread.planes.shape == shape  # kept for the next call


def test_planes_of_large_images_are_given_back(monkeypatch):
    shape = (40, 48)
    images = [_texture(seed, shape, True) for seed in (1, 2, 3)]
    kept = _scores(*images)
    assert chen._per_thread.planes.shape == shape
    # fewer than the call's 4 scratch planes and a spectrum and C' for each of a triple's 3 images
    monkeypatch.setattr(chen, "KEEP_BYTES", 8 * 40 * 48 * 8)
    assert _scores(*images) == kept and chen._per_thread.planes is None


@pytest.mark.parametrize("shape", [(37, 53), (66, 75)])
def test_numpy_path_equals_the_transcription(numpy_path, shape):
    vi, ir, fused = (_texture(seed, shape, True) for seed in (1, 2, 3))
    ours = [np.mean([score[name] for score in _scores(vi, ir, fused)]) for name in ("Qcb", "Qcv")]
    for name, value in zip(("Qcb", "Qcv"), ours):
        assert value == pytest.approx(REFERENCE[name](vi, ir, fused), rel=1e-9), name


def test_degenerate_images_give_nan_on_both_paths(monkeypatch):
    shape = (40, 44)
    texture, flat = _texture(4, shape), np.full(shape, 90, np.uint8)
    black = np.zeros(shape, np.uint8)
    for library in (None, "built"):
        if library is None:
            monkeypatch.setattr(chen_native, "_library", {"library": None})
        else:
            monkeypatch.setattr(chen_native, "_library", {})
        [constant] = _scores(texture, texture, flat)  # normalize1: 0 / 0
        [sources_flat] = _scores(black, black, texture)  # zero saliency: 0 / 0; G2 / G4 = 0 / 0
        assert math.isnan(constant["Qcb"]) and math.isnan(sources_flat["Qcv"]) and math.isnan(sources_flat["Qcb"])
        [same] = _scores(texture, texture, texture)
        assert same["Qcv"] == 0.0 and same["Qcb"] == pytest.approx(1.0, rel=1e-12)


def test_arguments_are_checked(kernel_built):
    plane = np.zeros((20, 20))
    with pytest.raises(ValueError, match="31 symmetric"):
        chen_native.contrast_power(plane, chen.TAPS_2[:-1], chen.TAPS_4, 4.0, np.empty((20, 20)))
    with pytest.raises(ValueError, match="writeable float64"):
        chen_native.contrast_power(plane, chen.TAPS_2, chen.TAPS_4, 4.0, np.empty((20, 21)))
    with pytest.raises(ValueError, match="contiguous rows"):
        chen_native.block_square_sums(plane[:, ::2])
    with pytest.raises(ValueError, match="uint8"):
        chen_native.saliency_sums(plane)
    with pytest.raises(ValueError, match="one row stride"):
        chen_native.chen_blum_sum(plane, plane, np.zeros((20, 40))[:, :20])


def test_no_native_means_the_numpy_path(monkeypatch, tmp_path):
    monkeypatch.setattr(chen_native, "_library", {})
    monkeypatch.setenv("MMDRFUSE_NO_NATIVE", "1")
    monkeypatch.setenv("MMDRFUSE_CACHE", str(tmp_path))
    plane = np.ones((20, 20))
    assert not chen_native.available()
    assert not chen_native.contrast_power(plane, chen.TAPS_2, chen.TAPS_4, 4.0, np.empty((20, 20)))
    assert chen_native.chen_blum_sum(plane, plane, plane) is None
    assert chen_native.block_square_sums(plane) is None
    assert chen_native.saliency_sums(plane.astype(np.uint8)) is None
    assert not chen_native.difference_product(plane, plane, plane, np.empty((20, 20)))
    assert not any(tmp_path.iterdir())


def test_kernels_build_into_an_empty_cache(monkeypatch, tmp_path):
    if native.find_compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setattr(chen_native, "_library", {})
    monkeypatch.delenv("MMDRFUSE_NO_NATIVE", raising=False)
    monkeypatch.setenv("MMDRFUSE_CACHE", str(tmp_path / "cache"))
    assert chen_native.available()
    [built] = list((tmp_path / "cache").iterdir())
    assert built.name.startswith("chen_kernels-") and built.suffix == ".so"
