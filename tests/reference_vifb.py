"""A straightforward transcription of VIFB's 13 MATLAB metrics (``../shared/reference/vifb/metrics*.m``).

One function per ``.m`` file, line by line: the wrapper's per-channel loop, each metric on its
own (nothing shared between metrics), MATLAB's built-ins by their SciPy equivalents
(``filter2`` = ``scipy.signal.correlate2d``, ``conv2`` = ``convolve2d``, ``imfilter(...,
'replicate')`` = ``scipy.ndimage.correlate(mode='nearest')``, ``fft2`` = ``numpy.fft.fft2``,
``blkproc`` = a loop over zero-padded blocks). MATLAB's per-pixel loops become NumPy element-wise
expressions (a Python loop over 300,000 pixels would only time the interpreter). Slow on purpose:
the tests check the fast metrics (:mod:`mmdrfuse.metrics.vifb`) against it and
``scripts/bench_metrics.py --convention vifb`` times it as the baseline.

Each ``vifb_<metric>(vi, ir, fused)`` takes uint8 arrays as MATLAB's ``imread`` returns them:
(H, W) gray or (H, W, 3) RGB, in VIFB's argument order (visible, infrared, fused).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.signal import convolve2d, correlate2d

GRAY = np.linalg.inv([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])[0]


def rgb2gray(image):
    """MATLAB's rgb2gray: uint8 in -> rounded uint8 out; double in -> double out."""
    if image.ndim == 2:
        return image
    gray = image.astype(np.float64) @ GRAY
    if image.dtype == np.uint8:
        return np.clip(np.floor(gray + 0.5), 0, 255).astype(np.uint8)
    return gray


def _wrapper(single, vi, ir, fused, *, double_sources=False):
    """The per-channel dispatch of every VIFB metric (``b``: fused bands, ``b1``: infrared bands)."""
    fused = fused.astype(np.float64)
    if double_sources:
        vi, ir = vi.astype(np.float64), ir.astype(np.float64)
    if fused.ndim == 2:
        return single(vi, ir, fused)
    if ir.ndim == 2:
        return float(np.mean([single(vi[:, :, k], ir, fused[:, :, k]) for k in range(fused.shape[2])]))
    return float(np.mean([single(vi[:, :, k], ir[:, :, k], fused[:, :, k]) for k in range(fused.shape[2])]))


def vifb_ag(vi, ir, fused):
    fused = fused.astype(np.float64)
    bands = fused[:, :, None] if fused.ndim == 2 else fused
    r, c = bands.shape[:2]
    g = []
    for k in range(bands.shape[2]):
        dzdy, dzdx = np.gradient(bands[:, :, k])
        s = np.sqrt((dzdx**2 + dzdy**2) / 2)
        g.append(s.sum() / ((r - 1) * (c - 1)))
    return float(np.mean(g))


def _cross_entropy(img1, fused):
    g1, g2 = rgb2gray(img1).astype(np.float64), rgb2gray(fused).astype(np.float64)
    x1 = np.bincount(g1.astype(np.int64).ravel(), minlength=256)
    x2 = np.bincount(g2.astype(np.int64).ravel(), minlength=256)
    p1, p2 = x1 / g1.size, x2 / g1.size
    both = (p1 != 0) & (p2 != 0)
    return float(np.sum(p1[both] * np.log2(p1[both] / p2[both])))


def vifb_ce(vi, ir, fused):
    return _wrapper(lambda a, b, f: (_cross_entropy(a, f) + _cross_entropy(b, f)) / 2.0, vi, ir, fused)


def vifb_ei(vi, ir, fused):
    fused = fused.astype(np.float64)
    bands = fused[:, :, None] if fused.ndim == 2 else fused
    w = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])  # fspecial('sobel')
    g = []
    for k in range(bands.shape[2]):
        gx = ndimage.correlate(bands[:, :, k], w, mode="nearest")
        gy = ndimage.correlate(bands[:, :, k], w.T, mode="nearest")
        g.append(np.sqrt(gx * gx + gy * gy))
    return float(np.mean(np.stack(g)))


def _entropy(fused):
    h = rgb2gray(fused).astype(np.float64)
    x = np.bincount(np.floor(h).astype(np.int64).ravel(), minlength=256)
    p = x / h.size
    p = p[p != 0]
    return float(-np.sum(p * np.log2(p)))


def vifb_en(vi, ir, fused):
    return _wrapper(lambda a, b, f: _entropy(f), vi, ir, fused)


def _mutinf(a, b):
    a, b = rgb2gray(a).astype(np.float64), rgb2gray(b).astype(np.float64)

    def levels(x):
        if x.max() != x.min():
            x = (x - x.min()) / (x.max() - x.min())
        else:
            x = np.zeros_like(x)
        return np.floor(x * 255 + 0.5).astype(np.int64)  # int16(): round half away from zero

    a, b = levels(a), levels(b)
    hab = np.zeros((256, 256))
    np.add.at(hab, (a.ravel(), b.ravel()), 1)
    ha, hb = hab.sum(1), hab.sum(0)

    def entropy(h):
        p = h[h != 0] / h.sum()
        return -np.sum(p * np.log(p))

    return float(entropy(ha) + entropy(hb) - entropy(hab))


def vifb_mi(vi, ir, fused):
    return _wrapper(lambda a, b, f: _mutinf(a, f) + _mutinf(b, f), vi, ir, fused)


def _mse(a, b):
    a, b = rgb2gray(a), rgb2gray(b)
    return math.sqrt(np.sum((a - b) ** 2)) / a.size  # VIFB's own "mse"


def vifb_psnr(vi, ir, fused):
    def single(a, b, f):
        mes = (_mse(a, f) + _mse(b, f)) / 2.0
        return 20 * math.log10(255 / math.sqrt(mes))

    return _wrapper(single, vi, ir, fused, double_sources=True)


def vifb_rmse(vi, ir, fused):
    return _wrapper(lambda a, b, f: (_mse(a, f) + _mse(b, f)) / 2.0, vi, ir, fused, double_sources=True)


def _qabf(str_a, str_b, str_f):
    tg, kg, dg, ta, ka, da = 0.9994, -15, 0.5, 0.9879, -22, 0.8
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    # pA = 255 * im2double(double(x)): im2double leaves doubles alone, so the images are scaled by 255.
    images = [255 * rgb2gray(x.astype(np.float64)) for x in (str_a, str_b, str_f)]
    strength, angle = [], []
    for p in images:
        sx, sy = convolve2d(p, h3, mode="same"), convolve2d(p, h1, mode="same")
        strength.append(np.sqrt(sx**2 + sy**2))
        with np.errstate(divide="ignore", invalid="ignore"):
            angle.append(np.where(sx == 0, math.pi / 2, np.arctan(sy / sx)))
    g_f, a_f = strength[2], angle[2]
    preserved = []
    for g_s, a_s in zip(strength[:2], angle[:2]):
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(g_s > g_f, g_f / g_s, np.where(g_s == g_f, g_f, g_s / g_f))
        orientation = 1 - np.abs(a_s - a_f) / (math.pi / 2)
        q_g = tg / (1 + np.exp(kg * (ratio - dg)))
        q_a = ta / (1 + np.exp(ka * (orientation - da)))
        preserved.append(q_g * q_a)
    g_a, g_b = strength[:2]
    return float(np.sum(preserved[0] * g_a + preserved[1] * g_b) / np.sum(g_a + g_b))


def vifb_qabf(vi, ir, fused):
    return _wrapper(_qabf, vi, ir, fused)


def vifb_sd(vi, ir, fused):
    def single(a, b, f):
        f = rgb2gray(f).astype(np.float64)
        return math.sqrt(np.sum((f - f.mean()) ** 2) / f.size)

    return _wrapper(single, vi, ir, fused)


def vifb_sf(vi, ir, fused):
    fused = fused.astype(np.float64)
    # [m, n] = size(fused) of an (m, n, 3) array gives n = 3 columns per row: MATLAB then indexes
    # fused(i, j) in the (m, 3n) array of the channels side by side, seams included.
    wide = np.concatenate([fused[:, :, k] for k in range(fused.shape[2])], axis=1) if fused.ndim == 3 else fused
    m, n = wide.shape
    rf = np.sum((wide[:, 1:] - wide[:, :-1]) ** 2) / (m * n)
    cf = np.sum((wide[1:, :] - wide[:-1, :]) ** 2) / (m * n)
    return float(math.sqrt(rf + cf))


def _ssim(img1, fused):
    x = np.arange(11) - 5
    w = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    w = w / w.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a, b = rgb2gray(img1).astype(np.float64), rgb2gray(fused).astype(np.float64)
    ua, ub = correlate2d(a, w, mode="valid"), correlate2d(b, w, mode="valid")
    siga = correlate2d(a * a, w, mode="valid") - ua * ua
    sigb = correlate2d(b * b, w, mode="valid") - ub * ub
    sigab = correlate2d(a * b, w, mode="valid") - ua * ub
    ssim_map = ((2 * ua * ub + c1) * (2 * sigab + c2)) / ((ua * ua + ub * ub + c1) * (siga + sigb + c2))
    return float(ssim_map.mean())


def vifb_ssim(vi, ir, fused):
    return _wrapper(lambda a, b, f: _ssim(a, f) + _ssim(b, f), vi, ir, fused)


def _normalize1(data):
    data = data.astype(np.float64)
    high, low = data.max(), data.min()
    if high == 0 and low == 0:
        return data
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (data - low) / (high - low) * 255
    return np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)  # MATLAB round: half away from zero


def _freqspace(hang, lie):
    """freqspace([hang, lie], 'meshgrid'): (u, v), u along columns, v along rows."""
    f_x = (np.arange(lie) - lie // 2) * (2 / lie)
    f_y = (np.arange(hang) - hang // 2) * (2 / hang)
    return np.meshgrid(f_x, f_y)


def _csf_filter(image, response):
    """ifft2(ifftshift(fftshift(fft2(image)) .* response)), complex as MATLAB keeps it."""
    return np.fft.ifft2(np.fft.ifftshift(np.fft.fftshift(np.fft.fft2(image)) * response))


def _qcb(im1, im2, fused):
    im1, im2, fused = (_normalize1(x) for x in (im1, im2, fused))
    f0, f1, a = 15.3870, 1.3456, 0.7622
    k, h, p, q, z = 1, 1, 3, 2, 0.0001
    hang, lie = im1.shape
    u, v = _freqspace(hang, lie)
    u, v = (lie / 30) * u, (hang / 30) * v
    r = np.sqrt(u**2 + v**2)
    sd = np.exp(-((r / f0) ** 2)) - a * np.exp(-((r / f1) ** 2))
    filtered = [_csf_filter(x, sd) for x in (im1, im2, fused)]
    y, x = np.mgrid[-15:16, -15:16]

    def gaussian2d(sigma):
        return np.exp(-(x * x + y * y) / (2 * sigma * sigma)) / (2 * math.pi * sigma * sigma)

    g1, g2 = gaussian2d(2), gaussian2d(4)

    def contrast_power(image):
        # filter2(G, im, 'same') of a complex image: real and imaginary parts filtered apart.
        buff = correlate2d(image.real, g1, mode="same") + 1j * correlate2d(image.imag, g1, mode="same")
        buff1 = correlate2d(image.real, g2, mode="same") + 1j * correlate2d(image.imag, g2, mode="same")
        c = np.abs(buff / buff1 - 1)
        return (k * c**p) / (h * c**q + z)

    c1p, c2p, cfp = (contrast_power(x) for x in filtered)
    with np.errstate(divide="ignore", invalid="ignore"):
        mask = (c1p < cfp).astype(np.float64)
        q1f = (c1p / cfp) * mask + (cfp / c1p) * (1 - mask)
        mask = (c2p < cfp).astype(np.float64)
        q2f = (c2p / cfp) * mask + (cfp / c2p) * (1 - mask)
        ramda1 = (c1p * c1p) / (c1p * c1p + c2p * c2p)
        ramda2 = (c2p * c2p) / (c1p * c1p + c2p * c2p)
    return float(np.mean(ramda1 * q1f + ramda2 * q2f))


def _check_colour_sources(vi, ir, fused, name):
    if fused.ndim == 2 and (vi.ndim == 3 or ir.ndim == 3):
        raise ValueError(f"{name}: VIFB's code fails on a gray fused image with colour sources")


def vifb_qcb(vi, ir, fused):
    _check_colour_sources(vi, ir, fused, "Qcb")
    return _wrapper(_qcb, vi, ir, fused, double_sources=True)


def _blkproc(image, size, fun):
    """blkproc(image, [size size], [0 0], fun): blocks from the top left, partial ones zero-padded."""
    rows, cols = -(-image.shape[0] // size), -(-image.shape[1] // size)
    padded = np.zeros((rows * size, cols * size), dtype=image.dtype)
    padded[: image.shape[0], : image.shape[1]] = image
    out = np.empty((rows, cols), dtype=np.result_type(image.dtype, np.float64))
    for i in range(rows):
        for j in range(cols):
            out[i, j] = fun(padded[i * size : (i + 1) * size, j * size : (j + 1) * size])
    return out


def _qcv(im1, im2, fused):
    window, alpha = 16, 5
    im1, im2, fused = (_normalize1(x) for x in (im1, im2, fused))
    flt1 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    flt2 = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64)

    def strength(image):  # the orientations VIFB also computes are never used
        gx, gy = correlate2d(image, flt1, mode="same"), correlate2d(image, flt2, mode="same")
        return np.sqrt(gx * gx + gy * gy)

    ramda1 = _blkproc(strength(im1), window, lambda x: np.sum(x**alpha))
    ramda2 = _blkproc(strength(im2), window, lambda x: np.sum(x**alpha))
    hang, lie = im1.shape
    u, v = _freqspace(hang, lie)
    u, v = (lie / 8) * u, (hang / 8) * v
    r = np.sqrt(u**2 + v**2)
    theta_m = 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))  # Mannos-Sakrison
    d1 = _blkproc(_csf_filter(im1 - fused, theta_m), window, lambda x: np.mean(x**2))
    d2 = _blkproc(_csf_filter(im2 - fused, theta_m), window, lambda x: np.mean(x**2))
    quality = np.sum(ramda1 * d1 + ramda2 * d2) / np.sum(ramda1 + ramda2)
    return float(quality.real)  # the imaginary part is rounding noise (the filter is even)


def vifb_qcv(vi, ir, fused):
    _check_colour_sources(vi, ir, fused, "Qcv")
    return _wrapper(_qcv, vi, ir, fused)


REFERENCE = {
    "CE": vifb_ce,
    "EN": vifb_en,
    "MI": vifb_mi,
    "PSNR": vifb_psnr,
    "AG": vifb_ag,
    "EI": vifb_ei,
    "Qabf": vifb_qabf,
    "SD": vifb_sd,
    "SF": vifb_sf,
    "RMSE": vifb_rmse,
    "SSIM": vifb_ssim,
    "Qcb": vifb_qcb,
    "Qcv": vifb_qcv,
}
