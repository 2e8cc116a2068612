"""The C sums behind VIFB's SSIM, AG and EI (mmdrfuse.metrics.native_sums): equal to the NumPy / OpenCV
paths they replace and to the transcription, on odd sizes and degenerate images, and the fallback without them."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from reference_vifb import REFERENCE, vifb_ag, vifb_ei, vifb_ssim
from scipy import ndimage

from mmdrfuse import native
from mmdrfuse.metrics import native_sums
from mmdrfuse.metrics.filters import gaussian_kernel_1d
from mmdrfuse.metrics.ssim import ssim_means_numpy
from mmdrfuse.metrics.vifb import scores as vifb
from mmdrfuse.metrics.vifb import vifb_scores

KERNEL = gaussian_kernel_1d(11, 1.5).numpy()
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


@pytest.fixture
def kernel_built():
    if not native_sums.available():
        pytest.skip("the C sums do not build here (no compiler, or MMDRFUSE_NO_NATIVE)")


@pytest.fixture
def without_native(monkeypatch):
    """The C sums disabled the way users disable them, for the duration of a test."""
    monkeypatch.setattr(native_sums, "_library", {})
    monkeypatch.setenv("MMDRFUSE_NO_NATIVE", "1")
    assert not native_sums.available()


def _texture(seed, shape):
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random(shape) * 255, (0, 0), 1.2)
    return np.clip((noise - noise.mean()) * 6 + 128, 0, 255).round().astype(np.uint8)


def _planes(shape):
    """Textures, a constant plane, a saturated one and an all-black one (zero variance, C_1 and C_2 alone)."""
    planes = [_texture(seed, shape) for seed in range(3)]
    planes += [np.full(shape, 77, np.uint8), np.full(shape, 255, np.uint8), np.zeros(shape, np.uint8)]
    planes[1][:, : shape[1] // 3] = 200  # flat and textured parts in one plane
    return planes


# Odd sizes: one strip narrower than STRIP, widths just past one and two strips, and the window's minimum.
@pytest.mark.parametrize("shape", [(11, 11), (23, 37), (40, 139), (17, 267), (30, 1050)])
def test_ssim_sums_equal_the_float64_path(kernel_built, shape):
    planes = _planes(shape)
    pairs = [(0, 1), (1, 0), (0, 2), (2, 3), (3, 4), (5, 5), (0, 5), (4, 4), (2, 2)]
    sums = native_sums.ssim_sums(planes, pairs, KERNEL, C1, C2)
    count = (shape[0] - 10) * (shape[1] - 10)
    as_float = [plane.astype(np.float64) for plane in planes]
    for (i, j), total in zip(pairs, sums):
        want = ssim_means_numpy(as_float[i], [as_float[j]], 255.0, "gaussian", 11, 1.5, 0.01, 0.03, False)[0]
        assert total / count == pytest.approx(want, rel=1e-12, abs=1e-14), (i, j)
    assert sums[5] / count == pytest.approx(1.0) and sums[7] / count == pytest.approx(1.0)  # SSIM(x, x) = 1
    assert sums[0] == pytest.approx(sums[1], rel=1e-14)  # symmetric
    assert sums[3] / count < 0.5  # a texture against a constant: a real signal, not 1s everywhere


def test_ssim_sums_reject_bad_arguments(kernel_built):
    plane = np.zeros((20, 20), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        native_sums.ssim_sums([plane, plane.astype(np.float64)], [(0, 1)], KERNEL, C1, C2)
    with pytest.raises(ValueError, match="contiguous"):
        native_sums.ssim_sums([plane, np.zeros((20, 40), np.uint8)[:, ::2]], [(0, 1)], KERNEL, C1, C2)
    with pytest.raises(ValueError, match="indices"):
        native_sums.ssim_sums([plane, plane], [(0, 2)], KERNEL, C1, C2)
    with pytest.raises(ValueError, match="symmetric"):
        native_sums.ssim_sums([plane, plane], [(0, 1)], np.array([0.2, 0.3, 0.5]), C1, C2)
    with pytest.raises(ValueError, match="smaller"):
        native_sums.ssim_sums([plane[:10], plane[:10]], [(0, 1)], KERNEL, C1, C2)


def _gradient_sums_numpy(plane):
    dy, dx = np.gradient(plane.astype(np.float64))
    sobel = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
    sx = ndimage.correlate(plane.astype(np.float64), sobel, mode="nearest")
    sy = ndimage.correlate(plane.astype(np.float64), sobel.T, mode="nearest")
    return np.sqrt((dx**2 + dy**2) / 2), np.sqrt(sx**2 + sy**2)


@pytest.mark.parametrize("shape", [(2, 2), (2, 9), (7, 3), (31, 45), (64, 17)])
def test_gradient_and_sobel_sums_are_matlabs_roots_summed(kernel_built, shape):
    plane = _texture(4, shape)
    plane[0, :] = 255  # a saturated border row: the largest one-sided differences
    gradient, sobel = _gradient_sums_numpy(plane)
    assert native_sums.gradient_sum(plane) == pytest.approx(gradient.sum(), rel=1e-14)
    assert native_sums.sobel_sum(plane) == pytest.approx(sobel.sum(), rel=1e-14)
    flat = np.full(shape, 90, np.uint8)
    assert native_sums.gradient_sum(flat) == 0.0 and native_sums.sobel_sum(flat) == 0.0
    # one pixel of 0..255 steps: each root is that of an exact integer
    step = np.zeros(shape, np.uint8)
    step[shape[0] // 2, shape[1] // 2] = 255
    gradient, sobel = _gradient_sums_numpy(step)
    assert native_sums.gradient_sum(step) == pytest.approx(gradient.sum(), rel=1e-15)
    assert native_sums.sobel_sum(step) == pytest.approx(sobel.sum(), rel=1e-15)


def test_plane_sums_reject_bad_arguments(kernel_built):
    with pytest.raises(ValueError, match="at least 2x2"):
        native_sums.gradient_sum(np.zeros((1, 5), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        native_sums.sobel_sum(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="contiguous"):
        native_sums.sobel_sum(np.zeros((5, 5, 3), np.uint8)[:, :, 0])


TRIPLES = {  # (shape, vi colour, ir colour, fused colour): every colour branch, odd sizes
    "all colour": ((37, 53), True, True, True),
    "gray infrared": ((40, 45), True, False, True),
    "gray fused, colour sources": ((33, 48), True, True, False),
    "all gray": ((29, 31), False, False, False),
}


def _triple(case):
    shape, *colour = TRIPLES[case]
    images = []
    for seed, is_colour in zip((1, 2, 3), colour):
        planes = [_texture(10 * seed + k, shape) for k in range(3 if is_colour else 1)]
        images.append(np.stack(planes, axis=2) if is_colour else planes[0])
    return images


@pytest.mark.parametrize("case", sorted(TRIPLES))
def test_vifb_values_same_with_and_without_the_c_sums(case, kernel_built, monkeypatch):
    vi, ir, fused = _triple(case)
    with_c = vifb_scores(vi, ir, fused, ["SSIM", "AG", "EI"])
    monkeypatch.setattr(native_sums, "_library", {"library": None})
    without_c = vifb_scores(vi, ir, fused, ["SSIM", "AG", "EI"])
    for name in with_c:
        assert with_c[name] == pytest.approx(without_c[name], rel=1e-12), name
    for name, reference in (("SSIM", vifb_ssim), ("AG", vifb_ag), ("EI", vifb_ei)):
        assert without_c[name] == pytest.approx(reference(vi, ir, fused), rel=1e-9), name


def test_the_fallback_is_the_transcription(without_native):
    vi, ir, fused = _triple("all colour")
    ours = vifb_scores(vi, ir, fused, ["SSIM", "AG", "EI"])
    for name, reference in (("SSIM", vifb_ssim), ("AG", vifb_ag), ("EI", vifb_ei)):
        assert ours[name] == pytest.approx(reference(vi, ir, fused), rel=1e-9), name
    # non-8-bit planes never reach the C sums (they would reject them)
    assert vifb.average_gradient(fused.astype(np.float64)) == pytest.approx(ours["AG"], rel=1e-12)


def test_kernel_builds_into_an_empty_cache(monkeypatch, tmp_path):
    if native.find_compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setattr(native_sums, "_library", {})
    monkeypatch.delenv("MMDRFUSE_NO_NATIVE", raising=False)
    monkeypatch.setenv("MMDRFUSE_CACHE", str(tmp_path / "cache"))
    assert native_sums.available()
    built = list((tmp_path / "cache").iterdir())
    assert len(built) == 1 and built[0].name.startswith("pixel_sums-") and built[0].suffix == ".so"


def _mutual_information_numpy(a, b):
    joint = np.zeros((256, 256))
    np.add.at(joint, (a.ravel(), b.ravel()), 1)

    def nats(counts):
        p = counts[counts != 0] / a.size
        return -np.sum(p * np.log(p))

    return nats(joint.sum(1)) + nats(joint.sum(0)) - nats(joint)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (31, 45), (120, 161)])
def test_mutual_information_equals_the_joint_histograms(kernel_built, shape):
    a, b = _texture(6, shape), _texture(7, shape)
    b[: shape[0] // 2] = a[: shape[0] // 2]  # dependent in part
    assert native_sums.mutual_information(a, b) == pytest.approx(_mutual_information_numpy(a, b), rel=1e-12, abs=1e-15)
    flat = np.zeros(shape, np.uint8)
    assert native_sums.mutual_information(a, flat) == pytest.approx(0.0, abs=1e-12)  # a constant carries nothing
    counts = np.bincount(a.ravel(), minlength=256)
    p = counts[counts != 0] / a.size
    assert native_sums.mutual_information(a, a) == pytest.approx(-np.sum(p * np.log(p)), rel=1e-12, abs=1e-15)  # H(a)
    with pytest.raises(ValueError, match="one shape"):
        native_sums.mutual_information(a, b.T.copy() if shape[0] != shape[1] else b[:, :0])


def test_vifb_mi_same_with_and_without_the_c_histogram(kernel_built, monkeypatch):
    vi, ir, fused = _triple("all colour")
    with_c = vifb_scores(vi, ir, fused, ["MI"])["MI"]
    monkeypatch.setattr(native_sums, "_library", {"library": None})
    assert with_c == pytest.approx(vifb_scores(vi, ir, fused, ["MI"])["MI"], rel=1e-12)
    assert with_c == pytest.approx(REFERENCE["MI"](vi, ir, fused), rel=1e-9) and with_c > 0.5


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (31, 45)])
def test_histogram_counts_every_value(kernel_built, shape):
    plane = _texture(8, shape)
    plane[0, :3] = [0, 255, 255][: shape[1]]  # both ends of the range
    counts = native_sums.histogram(plane)
    assert counts.dtype == np.float64 and np.array_equal(counts, np.bincount(plane.ravel(), minlength=256))
    assert np.array_equal(native_sums.histogram(np.full(shape, 255, np.uint8))[255:], [plane.size])
    with pytest.raises(ValueError, match="contiguous"):
        native_sums.histogram(np.zeros((4, 6), np.uint8)[:, ::2])


def test_ssim_sums_reject_a_kernel_longer_than_the_c_pass_takes(kernel_built):
    plane = np.zeros((70, 70), np.uint8)
    with pytest.raises(ValueError, match="taps"):
        native_sums.ssim_sums([plane, plane], [(0, 1)], np.full(63, 1 / 63), C1, C2)
    assert native_sums.ssim_sums([plane, plane], [(0, 1)], np.full(61, 1 / 61), C1, C2) == [10.0 * 10.0]


@pytest.mark.parametrize("size", [3, 7, 13])
def test_ssim_sums_of_other_windows_take_the_generic_radius(kernel_built, size):
    """Radii other than VIFB's 5 go through the loop with a variable radius."""
    planes = _planes((size + 9, size + 30))
    kernel = gaussian_kernel_1d(size, size / 6.0).numpy()
    sums = native_sums.ssim_sums(planes, [(0, 1), (2, 3)], kernel, C1, C2)
    count = 10 * 31
    for (i, j), total in zip([(0, 1), (2, 3)], sums):
        want = ssim_means_numpy(planes[i].astype(np.float64), [planes[j].astype(np.float64)], 255.0, "gaussian", size,
                                size / 6.0, 0.01, 0.03, False)[0]
        assert total / count == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (33, 47)])
def test_difference_sums_are_exact_integers(kernel_built, shape):
    plane = np.random.default_rng(9).integers(0, 256, shape, dtype=np.uint8)
    wide = plane.astype(np.int64)
    across, down = native_sums.difference_sums(plane)
    assert across == float(np.sum(np.diff(wide, axis=1) ** 2)) and down == float(np.sum(np.diff(wide, axis=0) ** 2))
    assert native_sums.difference_sums(np.full(shape, 3, np.uint8)) == (0.0, 0.0)
