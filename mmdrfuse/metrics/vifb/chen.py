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
packed real DFT, one forward transform per image shared by both metrics).
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

BLOCK = 16


def normalize1(image: np.ndarray) -> np.ndarray:
    """Liu's ``normalize1`` of an (H, W) array: float64, integers 0..255 (a look-up table for uint8)."""
    if image.dtype == np.uint8:
        values = np.arange(256, dtype=np.float64)
        low, high = float(image.min()), float(image.max())
        table = values if low == high == 0 else _rescale(values, low, high)
        return cv2.LUT(image, table)
    data = image.astype(np.float64)
    low, high = float(data.min()), float(data.max())
    return data if low == high == 0 else _rescale(data, low, high)


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


def _packed(response: np.ndarray) -> np.ndarray:
    """A real, even frequency response in OpenCV's packed (CCS) layout, for cv2.mulSpectrums."""
    kernel = np.fft.ifft2(response).real
    return cv2.dft(kernel)


@functools.lru_cache(maxsize=8)
def chen_blum_filter(height: int, width: int) -> np.ndarray:
    r = _radius(height, width, 30.0)
    return _packed(np.exp(-((r / 15.3870) ** 2)) - 0.7622 * np.exp(-((r / 1.3456) ** 2)))


@functools.lru_cache(maxsize=8)
def mannos_sakrison_filter(height: int, width: int) -> np.ndarray:
    r = _radius(height, width, 8.0)
    return _packed(2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1)))


def _gaussian_taps(sigma: float) -> np.ndarray:
    return np.exp(-(np.arange(-15, 16, dtype=np.float64) ** 2) / (2 * sigma * sigma))


TAPS_2, TAPS_4 = _gaussian_taps(2.0), _gaussian_taps(4.0)
# G_2 / G_4 of VIFB's gaussian2d, exp(-(x^2 + y^2) / (2 s^2)) / (2 pi s^2): the separable taps times the scales.
SCALE_RATIO = (1 / (2 * math.pi * 4)) / (1 / (2 * math.pi * 16))


def _inverse(spectrum: np.ndarray, response: np.ndarray) -> np.ndarray:
    product = cv2.mulSpectrums(spectrum, response, 0)
    return cv2.dft(product, flags=cv2.DFT_INVERSE | cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE)


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
    return tuple(cv2.mulSpectrums(csf, cv2.dft(_wrapped_gaussian(height, width, taps)), 0) for taps in (TAPS_2, TAPS_4))


def _zero_padded_filter(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """filter2(taps taps^T, image, 'same'): zero padding."""
    return cv2.sepFilter2D(np.ascontiguousarray(image), cv2.CV_64F, taps, taps, borderType=cv2.BORDER_CONSTANT)


def _gaussian_pair(spectrum: np.ndarray, shape) -> tuple:
    """filter2(G_2, I, 'same') and filter2(G_4, I, 'same') (separable taps, without the 1 / (2 pi s^2))
    of the CSF-filtered image I = ifft2(spectrum .* S).

    Away from the border both are circular filters, so one inverse DFT each of the spectrum times the
    Gaussian's; the 15-pixel frame, where filter2 pads with zeros instead, is filtered in space from
    strips of I (30 rows or columns: the frame's outputs need nothing beyond them).
    """
    filtered = _inverse(spectrum, chen_blum_filter(*shape))
    if min(shape) < MIN_SPECTRAL_SIZE:
        return tuple(_zero_padded_filter(filtered, taps) for taps in (TAPS_2, TAPS_4))
    out = []
    r = RADIUS
    for taps, response in zip((TAPS_2, TAPS_4), chen_blum_gaussians(*shape)):
        plane = _inverse(spectrum, response)
        plane[:r] = _zero_padded_filter(filtered[: 2 * r], taps)[:r]
        plane[-r:] = _zero_padded_filter(filtered[-2 * r :], taps)[-r:]
        plane[:, :r] = _zero_padded_filter(filtered[:, : 2 * r], taps)[:, :r]
        plane[:, -r:] = _zero_padded_filter(filtered[:, -2 * r :], taps)[:, -r:]
        out.append(plane)
    return tuple(out)


def _contrast_power(spectrum: np.ndarray, shape) -> np.ndarray:
    """C' = C^3 / (C^2 + 1e-4) of C = |G_2 * I / G_4 * I - 1| ('same', zero padding)."""
    narrow, wide = _gaussian_pair(spectrum, shape)
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


def _preservation(source: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """min / max of the two contrasts: MATLAB's (s ./ f) .* mask + (f ./ s) .* (1 - mask), which is
    NaN (0 * Inf) where s or f is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.minimum(source, fused)
        ratio /= np.maximum(source, fused)
    if not (source.all() and fused.all()):
        ratio[(source == 0) | (fused == 0)] = np.nan
    return ratio


def chen_blum(spectra, shape) -> float:
    """Qcb from the packed spectra (visible, infrared, fused) of the normalised images."""
    c1, c2, cf = (_contrast_power(spectrum, shape) for spectrum in spectra)
    q1, q2 = _preservation(c1, cf), _preservation(c2, cf)
    with np.errstate(divide="ignore", invalid="ignore"):
        # lambda_1 q_1 + lambda_2 q_2 with lambda_i = C_i^2 / (C_1^2 + C_2^2)
        s1, s2 = np.square(c1, out=c1), np.square(c2, out=c2)
        q1 *= s1
        q1 += np.multiply(q2, s2, out=q2)
        s1 += s2
        q1 /= s1
    return float(np.mean(q1))


def _block_sums(plane: np.ndarray) -> np.ndarray:
    """Sums over the 16x16 blocks of ``blkproc``, partial blocks zero-padded."""
    height, width = plane.shape
    rows, cols = -(-height // BLOCK), -(-width // BLOCK)
    if (rows * BLOCK, cols * BLOCK) != plane.shape:
        padded = np.zeros((rows * BLOCK, cols * BLOCK))
        padded[:height, :width] = plane
        plane = padded
    return plane.reshape(rows, BLOCK, cols, BLOCK).sum(axis=(1, 3))


def _saliency(image: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(image, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_CONSTANT)
    gy = cv2.Sobel(image, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_CONSTANT)
    magnitude = cv2.magnitude(gx, gy)
    # g^5 as g^4 g: much faster than pow(g, 5)
    power = np.square(magnitude)
    np.square(power, out=power)
    power *= magnitude
    return _block_sums(power)


def chen_varshney(images, spectra, shape) -> float:
    """Qcv from the normalised images (visible, infrared, fused) and their packed spectra."""
    response = mannos_sakrison_filter(*shape)
    saliency = [_saliency(image) for image in images[:2]]
    distortion = []
    for spectrum in spectra[:2]:
        difference = _inverse(cv2.subtract(spectrum, spectra[2]), response)
        distortion.append(_block_sums(difference * difference) / (BLOCK * BLOCK))
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(saliency[0] * distortion[0] + saliency[1] * distortion[1]) / np.sum(saliency[0] + saliency[1]))


def chen_metrics(vi: np.ndarray, ir: np.ndarray, fused: np.ndarray, names) -> dict:
    """{"Qcb": ..., "Qcv": ...} (those in ``names``) of one (H, W) channel triple."""
    images = [normalize1(image) for image in (vi, ir, fused)]
    spectra = [cv2.dft(image) for image in images]
    out = {}
    if "Qcb" in names:
        out["Qcb"] = chen_blum(spectra, images[0].shape)
    if "Qcv" in names:
        out["Qcv"] = chen_varshney(images, spectra, images[0].shape)
    return out
