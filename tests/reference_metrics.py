"""A straightforward reference for every fusion metric, following the conventions of the Python
evaluator that fusion papers copy (``utils/Evaluator.py`` of CDDFuse / MMIF-CDDFuse; see
../shared/reference/NOTES.md): NumPy float64, ``scipy.signal.convolve2d``, boolean-mask clamps in
the evaluator's order; SSIM from scikit-image. Slow on purpose: the tests check the fast metrics
against it, and ``scripts/bench_metrics.py`` times its VIF as the baseline.

Each ``reference_<metric>(f, a, b)`` takes float64 (H, W) arrays: fused, infrared, visible.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.signal import convolve2d


def reference_sd(f, a, b):
    return float(np.std(f))


def reference_en(f, a, b):
    p = np.bincount(np.uint8(np.round(f)).ravel(), minlength=256) / f.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def reference_sf(f, a, b):
    return float(np.sqrt(np.mean((f[:, 1:] - f[:, :-1]) ** 2) + np.mean((f[1:, :] - f[:-1, :]) ** 2)))


def reference_ag(f, a, b):
    gx, gy = np.zeros_like(f), np.zeros_like(f)
    gx[:, 0], gx[:, -1], gx[:, 1:-1] = f[:, 1] - f[:, 0], f[:, -1] - f[:, -2], (f[:, 2:] - f[:, :-2]) / 2
    gy[0], gy[-1], gy[1:-1] = f[1] - f[0], f[-1] - f[-2], (f[2:] - f[:-2]) / 2
    return float(np.mean(np.sqrt((gx**2 + gy**2) / 2)))


def _joint_histogram_mi(x, y):
    """Mutual information (nats) from the joint histogram, each distinct value its own bin."""
    _, x_labels = np.unique(x.ravel(), return_inverse=True)
    _, y_labels = np.unique(y.ravel(), return_inverse=True)
    joint = np.zeros((x_labels.max() + 1, y_labels.max() + 1))
    np.add.at(joint, (x_labels, y_labels), 1)
    joint /= joint.sum()
    outer = np.outer(joint.sum(1), joint.sum(0))
    nz = joint > 0
    return max(0.0, float(np.sum(joint[nz] * np.log(joint[nz] / outer[nz]))))


def reference_mi(f, a, b):
    return _joint_histogram_mi(f, a) + _joint_histogram_mi(f, b)


def reference_mse(f, a, b):
    return float((np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2)


def reference_psnr(f, a, b):
    return float(10 * np.log10(np.max(f) ** 2 / reference_mse(f, a, b)))


def _corr(x, y):
    xc, yc = x - x.mean(), y - y.mean()
    return np.sum(xc * yc) / np.sqrt(np.sum(xc**2) * np.sum(yc**2))


def reference_cc(f, a, b):
    return float((_corr(a, f) + _corr(b, f)) / 2)


def reference_scd(f, a, b):
    return float(_corr(a, f - b) + _corr(b, f - a))


def vifp(ref, dist):
    """VIF(ref, dist): the 4-scale pixel-domain VIF with ``convolve2d``, the evaluator's clamps in order."""
    sigma_nsq, eps = 2.0, 1e-10
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        sd = n / 5.0
        r = (n - 1) / 2
        y, x = np.ogrid[-r : r + 1, -r : r + 1]
        win = np.exp(-(x * x + y * y) / (2 * sd * sd))
        win[win < np.finfo(win.dtype).eps * win.max()] = 0
        win = win / win.sum()

        def conv(img):
            return convolve2d(img, np.rot90(win, 2), mode="valid")

        if scale > 1:
            ref, dist = conv(ref)[::2, ::2], conv(dist)[::2, ::2]
        mu1, mu2 = conv(ref), conv(dist)
        s1 = conv(ref * ref) - mu1 * mu1
        s2 = conv(dist * dist) - mu2 * mu2
        s12 = conv(ref * dist) - mu1 * mu2
        s1[s1 < 0] = 0
        s2[s2 < 0] = 0
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        flat = s1 < eps
        g[flat], sv[flat], s1[flat] = 0, s2[flat], 0
        flat = s2 < eps
        g[flat], sv[flat] = 0, 0
        negative = g < 0
        sv[negative], g[negative] = s2[negative], 0
        sv[sv <= eps] = eps
        num += np.sum(np.log10(1 + g * g * s1 / (sv + sigma_nsq)))
        den += np.sum(np.log10(1 + s1 / sigma_nsq))
    with np.errstate(invalid="ignore", divide="ignore"):
        value = num / den
    return 1.0 if np.isnan(value) else float(value)


def reference_vif(f, a, b):
    return vifp(a, f) + vifp(b, f)


def _sobel(img):
    sx = convolve2d(img, np.array([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]), mode="same")
    sy = convolve2d(img, np.array([[1.0, 2, 1], [0, 0, 0], [-1, -2, -1]]), mode="same")
    angle = np.full_like(img, math.pi / 2)
    nonzero = sx != 0
    angle[nonzero] = np.arctan(sy[nonzero] / sx[nonzero])
    return np.sqrt(sx * sx + sy * sy), angle


def _edge_preservation(g_s, a_s, g_f, a_f):
    strength = np.zeros_like(g_s)
    m = g_s > g_f
    strength[m] = g_f[m] / g_s[m]
    m = g_s == g_f
    strength[m] = g_f[m]
    m = g_s < g_f
    strength[m] = g_s[m] / g_f[m]
    orientation = 1 - np.abs(a_s - a_f) / (math.pi / 2)
    return 0.9994 / (1 + np.exp(-15 * (strength - 0.5))) * 0.9879 / (1 + np.exp(-22 * (orientation - 0.8)))


def reference_qabf(f, a, b):
    (ga, aa), (gb, ab), (gf, af) = _sobel(a), _sobel(b), _sobel(f)
    num = np.sum(_edge_preservation(ga, aa, gf, af) * ga + _edge_preservation(gb, ab, gf, af) * gb)
    return float(num / np.sum(ga + gb))


def reference_ssim(f, a, b):
    from skimage.metrics import structural_similarity as ssim
    return float(ssim(f, a, data_range=2) + ssim(f, b, data_range=2))


REFERENCE = {
    "SD": reference_sd, "SCD": reference_scd, "VIF": reference_vif, "Qabf": reference_qabf,
    "SSIM": reference_ssim, "CC": reference_cc, "EN": reference_en, "SF": reference_sf,
    "AG": reference_ag, "MI": reference_mi, "MSE": reference_mse, "PSNR": reference_psnr,
}  # fmt: skip
