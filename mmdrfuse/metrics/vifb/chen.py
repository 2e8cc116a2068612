"""VIFB's Chen-Blum (Qcb) and Chen-Varshney (Qcv) metrics of one channel triple, vectorised.

Both first map each image to 0..255 with Liu's ``normalize1``:
:math:`\\mathrm{round}(255 (x - \\min x) / (\\max x - \\min x))` (an all-zero image is kept;
a constant non-zero one gives 0 / 0 = NaN, and so does the metric, as in MATLAB).

Both filter in the frequency domain on the image's own grid (a circular filter), with
``freqspace`` coordinates :math:`u = f_x\\, W / c,\\ v = f_y\\, H / c`, :math:`f \\in [-1, 1)`
and :math:`r = \\sqrt{u^2 + v^2}`:

* **Qcb** (Chen and Blum 2009; ``c = 30``): contrast-sensitivity filter
  :math:`S(r) = e^{-(r / 15.387)^2} - 0.7622\\, e^{-(r / 1.3456)^2}`; local contrast
  :math:`C = |G_2 \\star I / G_4 \\star I - 1|` with 31x31 Gaussians of sigma 2 and 4 (not
  normalised: their ratio of scales is 4), ``filter2(..., 'same')``: zero padding;
  :math:`C' = C^3 / (C^2 + 10^{-4})`; per pixel
  :math:`Q = \\lambda_1 \\min(C'_1, C'_F) / \\max(C'_1, C'_F) + \\lambda_2 (\\ldots)` with
  :math:`\\lambda_i = C'^2_i / (C'^2_1 + C'^2_2)`; Qcb is the mean of Q. As in MATLAB, a pixel
  where some C' is 0 makes Qcb NaN (its ``x ./ y .* mask`` gives 0 * Inf there).
* **Qcv** (Chen and Varshney 2007; ``c = 8``): the Mannos-Sakrison filter
  :math:`\\theta(r) = 2.6 (0.0192 + 0.144 r) e^{-(0.144 r)^{1.1}}` applied to the differences
  :math:`I_i - F`; in 16x16 blocks (``blkproc``: from the top left, partial blocks zero-padded)
  :math:`D_i = \\operatorname{mean}(\\tilde{D}_i^2)` over the 256 pixels and saliency
  :math:`\\lambda_i = \\sum g_i^5` of the Sobel magnitude g (``filter2``, zero padding);
  :math:`Q_{cv} = \\sum (\\lambda_1 D_1 + \\lambda_2 D_2) / \\sum (\\lambda_1 + \\lambda_2)`
  (lower is better; both sources flat gives 0 / 0 = NaN).

MATLAB keeps the inverse FFTs complex; the filters are real and even, so their imaginary parts
are rounding noise (about 1e-16 relative) and the real inverse transform is used here (OpenCV's
packed real DFT, one forward transform per image shared by both metrics; the filter responses
multiply the packed spectra elementwise, see :func:`ccs_multiplier`).

Speed (:func:`chen_metrics` scores all channel triples of one call together): an image equal to
one already seen in the call (the three identical channels of a gray infrared image stored as
RGB, as VIFB's are) is normalised, transformed, filtered and its saliency computed once; every
full-size plane is one of a set kept per thread from call to call (a fresh 2.4 MB plane costs
about 1 ms in page faults, more than the arithmetic on it; see :data:`KEEP_BYTES`), and an
image's planes are reused once its last triple is scored. The per-pixel work is in C
(:mod:`~mmdrfuse.metrics.vifb.chen_native`): Qcb's Gaussians in space, so that each image needs
one inverse DFT (the CSF) instead of three, and C', Q, the block sums and the saliency in one
pass each. Without a C compiler (or with ``MMDRFUSE_NO_NATIVE``) NumPy and OpenCV do the same,
the Gaussians as circular filters in the frequency domain with the 15-pixel frame refiltered in
space (equal to the C path to 6e-15 relative on VIFB's labMan).
"""
from __future__ import annotations

import functools
import math
import threading

import cv2
import numpy as np

from mmdrfuse.metrics.vifb import chen_native

BLOCK = 16


def normalize1(image: np.ndarray, out: np.ndarray = None) -> np.ndarray:
    """Liu's ``normalize1`` of an (H, W) array: float64, integers 0..255 (a look-up table for uint8).

    ``out``: an (H, W) float64 plane to write a uint8 image's result into.
    """
    if image.dtype == np.uint8:
        return cv2.LUT(image, _table(image), out)
    data = image.astype(np.float64)
    low, high = float(data.min()), float(data.max())
    return data if low == high == 0 else _rescale(data, low, high)


def _table(image: np.ndarray) -> np.ndarray:
    """normalize1 of the 256 values of a uint8 image, as a float64 look-up table."""
    values = np.arange(256, dtype=np.float64)
    low, high = float(image.min()), float(image.max())
    return values if low == high == 0 else _rescale(values, low, high)


def _rescale(data: np.ndarray, low: float, high: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (data - low) / (high - low) * 255
    return np.floor(scaled + 0.5)  # MATLAB's round for values >= 0 (NaN stays NaN)


def _radius(height: int, width: int, cycles: float) -> np.ndarray:
    """r of ``freqspace([height, width], 'meshgrid')`` scaled by (width / cycles, height / cycles), in
    the FFT's own (unshifted) order, so that no fftshift is needed."""
    f_x = (np.arange(width) - width // 2) * (2 / width) * (width / cycles)
    f_y = (np.arange(height) - height // 2) * (2 / height) * (height / cycles)
    u, v = np.meshgrid(np.fft.ifftshift(f_x), np.fft.ifftshift(f_y))
    return np.sqrt(u**2 + v**2)


def ccs_multiplier(response: np.ndarray) -> np.ndarray:
    """A real frequency response (H, W), in the FFT's order and even (response[-k] = response[k]),
    laid out as OpenCV's packed (CCS) spectra of real images are: multiplying such a spectrum by it
    elementwise is multiplying every frequency by its response, real and imaginary part alike.

    In CCS, column c holds the real or imaginary part of horizontal frequency (c + 1) // 2; the
    rows of the columns of frequency 0 and W / 2 (W even) are packed the same way, other rows are
    vertical frequency y. Exact, unlike cv2.mulSpectrums with the DFT of the response's kernel
    (whose imaginary parts are rounding noise), and one pass with NumPy.
    """
    height, width = response.shape
    packed_rows = (np.arange(height) + 1) // 2
    out = np.ascontiguousarray(response[:, (np.arange(width) + 1) // 2])
    out[:, 0] = response[packed_rows, 0]
    if width % 2 == 0:
        out[:, -1] = response[packed_rows, width // 2]
    return out


@functools.lru_cache(maxsize=8)
def chen_blum_filter(height: int, width: int) -> np.ndarray:
    """The CSF of Qcb as a CCS multiplier, times 1 / (H W): the inverse DFT's scale, which then costs
    no pass of its own."""
    r = _radius(height, width, 30.0)
    return ccs_multiplier(np.exp(-((r / 15.3870) ** 2)) - 0.7622 * np.exp(-((r / 1.3456) ** 2))) / (height * width)


@functools.lru_cache(maxsize=8)
def mannos_sakrison_filter(height: int, width: int) -> np.ndarray:
    """The Mannos-Sakrison CSF of Qcv as a CCS multiplier, times 1 / (H W)."""
    r = _radius(height, width, 8.0)
    return ccs_multiplier(2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))) / (height * width)


def _gaussian_taps(sigma: float) -> np.ndarray:
    return np.exp(-(np.arange(-15, 16, dtype=np.float64) ** 2) / (2 * sigma * sigma))


TAPS_2, TAPS_4 = _gaussian_taps(2.0), _gaussian_taps(4.0)
# G_2 / G_4 of VIFB's gaussian2d, exp(-(x^2 + y^2) / (2 s^2)) / (2 pi s^2): the separable taps times the scales.
SCALE_RATIO = (1 / (2 * math.pi * 4)) / (1 / (2 * math.pi * 16))


def _inverse(spectrum: np.ndarray, response: np.ndarray, product: np.ndarray, out: np.ndarray) -> np.ndarray:
    """ifft2(spectrum .* response), real, into ``out`` (``product``: a scratch plane; ``response``: a
    CCS multiplier carrying the scale 1 / (H W), see :func:`chen_blum_filter`)."""
    return cv2.dft(np.multiply(spectrum, response, out=product), out, cv2.DFT_INVERSE | cv2.DFT_REAL_OUTPUT)


RADIUS = TAPS_2.shape[0] // 2
# Below this size the border strips would cover the image: filter in space instead.
MIN_SPECTRAL_SIZE = 4 * RADIUS + 2


def _wrapped_gaussian(height: int, width: int, taps: np.ndarray) -> np.ndarray:
    """The separable kernel taps x taps centred on pixel (0, 0) of an (height, width) torus."""
    column, row = np.zeros(height), np.zeros(width)
    offsets = np.arange(-RADIUS, RADIUS + 1)
    column[offsets % height], row[offsets % width] = taps, taps
    return np.outer(column, row)


@functools.lru_cache(maxsize=8)
def chen_blum_gaussians(height: int, width: int):
    """The CSF filter times each 31x31 Gaussian, packed: one inverse DFT gives the Gaussian filter of
    the CSF-filtered image, circularly (equal to filter2's zero padding away from the border)."""
    csf = chen_blum_filter(height, width)
    # the torus's Gaussian is even: its spectrum is real
    return tuple(csf * ccs_multiplier(np.fft.fft2(_wrapped_gaussian(height, width, taps)).real) for taps in (TAPS_2, TAPS_4))


def _border_matrix(taps: np.ndarray) -> np.ndarray:
    """(r, 2r) matrix M with (M @ x)[i] = sum_j taps[j] x[i + j - r], x zero before index 0: the first r
    outputs of a zero-padded 1-D correlation, which need only the first 2r inputs."""
    rows = np.arange(RADIUS)[:, None]
    offsets = np.arange(2 * RADIUS)[None, :] - rows + RADIUS
    return np.where(offsets < taps.shape[0], taps[np.minimum(offsets, taps.shape[0] - 1)], 0.0)


BORDER_2, BORDER_4 = _border_matrix(TAPS_2), _border_matrix(TAPS_4)
IDENTITY_TAP = np.ones(1)


def _zero_padded_filter(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """filter2(taps taps^T, image, 'same'): zero padding."""
    return cv2.sepFilter2D(np.ascontiguousarray(image), cv2.CV_64F, taps, taps, borderType=cv2.BORDER_CONSTANT)


def _refilter_frame(plane: np.ndarray, filtered: np.ndarray, taps: np.ndarray, border: np.ndarray) -> None:
    """Overwrite the r-pixel frame of the circular ``plane`` with filter2(taps taps^T, filtered, 'same').

    Per side, the pass across the border is a small matrix product on the 2r rows (columns) next to
    it (``border``, flipped for the far side: the taps are symmetric); the pass along it a 1-D
    zero-padded filter of those r rows (columns). Corners come from the column passes.
    """
    r = RADIUS

    def along_rows(rows: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(rows, cv2.CV_64F, taps, IDENTITY_TAP, borderType=cv2.BORDER_CONSTANT)

    def along_columns(columns: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(columns, cv2.CV_64F, IDENTITY_TAP, taps, borderType=cv2.BORDER_CONSTANT)

    far = border[::-1, ::-1]
    # Both sides in one call each: the pass along rows (columns) keeps rows (columns) apart.
    rows = along_rows(np.concatenate((border @ filtered[: 2 * r], far @ filtered[-2 * r :])))
    plane[:r], plane[-r:] = rows[:r], rows[r:]
    columns = along_columns(np.concatenate((filtered[:, : 2 * r] @ border.T, filtered[:, -2 * r :] @ far.T), axis=1))
    plane[:, :r], plane[:, -r:] = columns[:, :r], columns[:, r:]


class _Planes:
    """Float64 (H, W) planes kept from call to call: the named scratch planes shared by every image
    and channel, and those :meth:`take` hands out for one image's spectrum or C'. A fresh 2.4 MB
    plane costs about 1 ms of page faults (AMD EPYC), more than most of the arithmetic on it."""

    SCRATCH = ("product", "filtered", "wide", "normal")

    def __init__(self, shape):
        self.shape = shape
        for name in self.SCRATCH:
            setattr(self, name, np.empty(shape))
        self._kept: list = []
        self._used, self._free = 0, []

    def take(self) -> np.ndarray:
        """A plane no other caller holds until it is given back or :meth:`reset`."""
        if self._free:
            return self._free.pop()
        if self._used == len(self._kept):
            self._kept.append(np.empty(self.shape))
        self._used += 1
        return self._kept[self._used - 1]

    def give(self, plane: np.ndarray) -> None:
        """Hand back a plane from :meth:`take`, for the next :meth:`take`."""
        self._free.append(plane)

    def reset(self) -> _Planes:
        self._used, self._free = 0, []
        return self

    @property
    def nbytes(self) -> int:
        return (len(self.SCRATCH) + len(self._kept)) * math.prod(self.shape) * 8


_per_thread = threading.local()
# The most a thread keeps between calls (10 planes for RGB triples: 25 MB at 640x480, 105 MB at
# 1280x1024): larger images give their planes back after each call.
KEEP_BYTES = 256 * 2**20


def _planes(shape) -> _Planes:
    """This thread's planes for ``shape`` (those of one image size at a time are kept)."""
    planes = getattr(_per_thread, "planes", None)
    if planes is None or planes.shape != shape:
        planes = _per_thread.planes = _Planes(shape)
    return planes.reset()


def _release_if_large(planes: _Planes) -> None:
    if planes.nbytes > KEEP_BYTES:
        _per_thread.planes = None


def _contrast_power(spectrum: np.ndarray, shape, planes: _Planes) -> np.ndarray:
    """C' = C^3 / (C^2 + 1e-4) of C = |G_2 * I / G_4 * I - 1| ('same', zero padding) of the
    CSF-filtered image I = ifft2(spectrum .* S), in a plane taken from ``planes``.

    With the C kernels (:mod:`~mmdrfuse.metrics.vifb.chen_native`) the Gaussians are applied in
    space, and C' formed in the same pass. Without them, away from the border both Gaussian filters
    are circular, so one inverse DFT each of the spectrum times the Gaussian's; the 15-pixel frame,
    where filter2 pads with zeros instead, is filtered in space from strips of I (30 rows or
    columns: the frame's outputs need nothing beyond them).
    """
    narrow, wide = planes.take(), planes.wide
    filtered = _inverse(spectrum, chen_blum_filter(*shape), planes.product, planes.filtered)
    if chen_native.contrast_power(filtered, TAPS_2, TAPS_4, SCALE_RATIO, narrow):
        return narrow
    if min(shape) < MIN_SPECTRAL_SIZE:
        narrow[...], wide[...] = (_zero_padded_filter(filtered, taps) for taps in (TAPS_2, TAPS_4))
    else:
        for taps, border, response, plane in zip((TAPS_2, TAPS_4), (BORDER_2, BORDER_4), chen_blum_gaussians(*shape),
                                                 (narrow, wide)):
            _inverse(spectrum, response, planes.product, plane)
            _refilter_frame(plane, filtered, taps, border)
    with np.errstate(divide="ignore", invalid="ignore"):
        contrast = np.divide(narrow, wide, out=narrow)
        contrast *= SCALE_RATIO
        contrast -= 1
        np.abs(contrast, out=contrast)
        square = np.multiply(contrast, contrast, out=wide)
        contrast *= square
        square += 1e-4
        contrast /= square
    return contrast


def chen_blum(c1: np.ndarray, c2: np.ndarray, cf: np.ndarray, planes: _Planes) -> float:
    """Qcb from the contrast powers C' of (visible, infrared, fused).

    Per pixel :math:`Q = (C'^2_1 q_1 + C'^2_2 q_2) / (C'^2_1 + C'^2_2)`, :math:`q_i = \\min / \\max` of
    :math:`C'_i, C'_F`. MATLAB computes q as ``(s ./ f) .* mask + (f ./ s) .* (1 - mask)``: 0 * Inf =
    NaN wherever s or f is 0, and then Q is NaN there whatever its weight: Qcb is NaN as soon as
    any C' has a zero.
    """
    native = chen_native.chen_blum_sum(c1, c2, cf)
    if native is None:
        return _chen_blum_numpy(c1, c2, cf, planes)
    total, zero = native
    return math.nan if zero else total / c1.size


def _chen_blum_numpy(c1: np.ndarray, c2: np.ndarray, cf: np.ndarray, planes: _Planes) -> float:
    if any(cv2.countNonZero(c) < c.size for c in (c1, c2, cf)):  # NaN counts as non-zero
        return math.nan
    q1, q2, weight = planes.product, planes.filtered, planes.wide
    with np.errstate(divide="ignore", invalid="ignore"):
        np.minimum(c1, cf, out=q1)
        q1 /= np.maximum(c1, cf, out=weight)
        q1 *= np.multiply(c1, c1, out=weight)
        np.minimum(c2, cf, out=q2)
        q2 /= np.maximum(c2, cf, out=weight)
        q2 *= np.multiply(c2, c2, out=weight)
        q1 += q2
        np.multiply(c1, c1, out=q2)
        q2 += np.multiply(c2, c2, out=weight)
        q1 /= q2
    return cv2.sumElems(q1)[0] / q1.size


def _block_sums(plane: np.ndarray) -> np.ndarray:
    """Sums over the 16x16 blocks of ``blkproc``, partial blocks zero-padded."""
    height, width = plane.shape
    rows, cols = -(-height // BLOCK), -(-width // BLOCK)
    if (rows * BLOCK, cols * BLOCK) != plane.shape:
        padded = np.zeros((rows * BLOCK, cols * BLOCK))
        padded[:height, :width] = plane
        plane = padded
    # The 16 rows of each block first (whole contiguous rows), then 16 neighbours: five times faster
    # than one reduction over axes (1, 3).
    return plane.reshape(rows, BLOCK, cols * BLOCK).sum(axis=1).reshape(rows, cols, BLOCK).sum(axis=2)


def _normalized_for_sobel(image: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """normalize1 of ``image``, as uint8 where its values allow (a uint8 image that is not constant
    and non-zero): the Sobel filter then gives the same exact integer sums, from 8-bit data, faster."""
    if image.dtype == np.uint8:
        table = _table(image)
        if not np.isnan(table).any():
            return cv2.LUT(image, table.astype(np.uint8))
    return normalize1(image, scratch)


def _saliency(image: np.ndarray, planes: _Planes) -> np.ndarray:
    """Block sums of g^5, g the Sobel magnitude of the normalised ``image`` (zero padding)."""
    native = chen_native.saliency_sums(image) if image.dtype == np.uint8 else None
    return _saliency_numpy(image, planes) if native is None else native


def _saliency_numpy(image: np.ndarray, planes: _Planes) -> np.ndarray:
    gx = cv2.Sobel(image, cv2.CV_64F, 1, 0, dst=planes.product, ksize=3, borderType=cv2.BORDER_CONSTANT)
    gy = cv2.Sobel(image, cv2.CV_64F, 0, 1, dst=planes.filtered, ksize=3, borderType=cv2.BORDER_CONSTANT)
    magnitude = cv2.magnitude(gx, gy, planes.wide)
    # g^5 as g^4 g: much faster than pow(g, 5)
    power = np.square(magnitude, out=planes.product)
    np.square(power, out=power)
    power *= magnitude
    return _block_sums(power)


def chen_varshney(spectra, saliency, planes: _Planes) -> float:
    """Qcv from the packed spectra (visible, infrared, fused) and the sources' block saliencies."""
    response = mannos_sakrison_filter(*spectra[0].shape)
    distortion = []
    for spectrum in spectra[:2]:
        product = planes.product
        if not chen_native.difference_product(spectrum, spectra[2], response, product):
            np.multiply(np.subtract(spectrum, spectra[2], out=product), response, out=product)
        difference = cv2.dft(product, planes.filtered, cv2.DFT_INVERSE | cv2.DFT_REAL_OUTPUT)
        sums = chen_native.block_square_sums(difference)
        if sums is None:
            sums = _block_sums(np.square(difference, out=difference))
        distortion.append(sums / (BLOCK * BLOCK))
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(saliency[0] * distortion[0] + saliency[1] * distortion[1]) / np.sum(saliency[0] + saliency[1]))


class _Image:
    """One image of the call: its packed spectrum, then, when asked, its C' and saliency."""

    def __init__(self, image: np.ndarray):
        self.raw = image
        self.spectrum = self.contrast = self.saliency = None

    def same(self, image: np.ndarray) -> bool:
        """Whether ``image`` holds the same values (a first row first: distinct channels differ at once)."""
        if self.raw is image:
            return True
        return self.raw.dtype == image.dtype and np.array_equal(self.raw[0], image[0]) and np.array_equal(self.raw, image)

    def transform(self, planes: _Planes) -> None:
        if self.spectrum is None:
            self.spectrum = cv2.dft(normalize1(self.raw, planes.normal), planes.take())

    def release(self, planes: _Planes) -> None:
        """Give the full-size planes back (no later triple needs them)."""
        for plane in (self.spectrum, self.contrast):
            if plane is not None:
                planes.give(plane)
        self.spectrum = self.contrast = None


def chen_metrics(triples, names) -> list:
    """[{"Qcb": ..., "Qcv": ...} (those in ``names``) of each (H, W) channel triple (vi, ir, fused)]."""
    shape = triples[0][2].shape
    planes = _planes(shape)
    seen: list = []

    def image(raw: np.ndarray) -> _Image:
        known = next((item for item in seen if item.same(raw)), None)
        if known is None:
            known = _Image(raw)
            seen.append(known)
        return known

    rows = [[image(raw) for raw in triple] for triple in triples]
    # An image's planes go back once its last triple is scored: VIFB's RGB triples with a gray
    # infrared image then hold 6 planes at a time, not 14 (fewer cache misses).
    last = {id(item): index for index, row in enumerate(rows) for item in row}
    out = []
    for index, images in enumerate(rows):
        for item in images:
            item.transform(planes)
        scores = {}
        if "Qcb" in names:
            for item in images:
                if item.contrast is None:
                    item.contrast = _contrast_power(item.spectrum, shape, planes)
            scores["Qcb"] = chen_blum(*(item.contrast for item in images), planes)
        if "Qcv" in names:
            for item in images[:2]:
                if item.saliency is None:
                    item.saliency = _saliency(_normalized_for_sobel(item.raw, planes.normal), planes)
            scores["Qcv"] = chen_varshney([item.spectrum for item in images], [item.saliency for item in images[:2]],
                                          planes)
        out.append(scores)
        for item in {id(item): item for item in images}.values():
            if last[id(item)] == index:
                item.release(planes)
    _release_if_large(planes)
    return out
