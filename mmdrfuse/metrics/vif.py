"""VIF: pixel-domain visual information fidelity (Sheikh and Bovik, 2006, "vifp"), summed over the sources.

At each scale :math:`s = 1..4` a normalised Gaussian window of :math:`N = 2^{5-s} + 1` taps and
standard deviation :math:`N / 5` gives the local statistics ('valid' windows only) of the
reference :math:`R` (a source) and the distorted image :math:`D` (the fused image); before
scales 2-4 both images are blurred with that scale's window ('valid') and subsampled by 2.

.. math::
    g = \\frac{\\sigma_{RD}}{\\sigma_R^2 + \\epsilon}, \\quad
    \\sigma_V^2 = \\sigma_D^2 - g\\, \\sigma_{RD}, \\quad
    \\mathrm{VIF}(R, D) = \\frac{\\sum_{s, p} \\log_{10}\\big(1 + g^2 \\sigma_R^2 / (\\sigma_V^2 + \\sigma_n^2)\\big)}
                              {\\sum_{s, p} \\log_{10}\\big(1 + \\sigma_R^2 / \\sigma_n^2\\big)}

with :math:`\\sigma_n^2 = 2`, :math:`\\epsilon = 10^{-10}` and the clamps of the widely used
Python evaluator, in its order: negative variances become 0; where :math:`\\sigma_R^2 < \\epsilon`:
g = 0 and :math:`\\sigma_R^2 = 0`; where :math:`\\sigma_D^2 < \\epsilon`: g = 0; where g < 0: g = 0;
:math:`\\sigma_V^2` is floored at :math:`\\epsilon`. A pixel therefore adds to the numerator only
where both variances reach :math:`\\epsilon` and the covariance is positive. A constant
reference (denominator 0, NaN in the evaluator) gives VIF = 1, the evaluator's NaN rule.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from mmdrfuse.metrics import filters, native_filter
from mmdrfuse.metrics.filters import (
    band_slices,
    gaussian_kernel_1d,
    row_bands,
    separable_filter,
    valid_separable_filter,
)
from mmdrfuse.metrics.no_reference import check_gray_batch

SCALES = 4
EPS = 1e-10
MIN_SIZE = 41  # smallest side whose four scales all have a 'valid' window left
_BELOW_EPS = float(np.nextafter(EPS, 0.0))


def visual_information_fidelity(
    references: Sequence[torch.Tensor], distorted: torch.Tensor, *, noise_variance: float = 2.0
) -> torch.Tensor:
    """VIF of ``distorted`` (B, 1, H, W) against each reference (B, 1, H, W): (B, K) for K references.

    The distorted image's local statistics are computed once for all references. Values on the
    0..255 scale; H, W >= 41. Not differentiable (in-place clamps).
    """
    check_gray_batch(distorted, *references, min_size=MIN_SIZE)
    if filters.use_opencv(distorted):
        sums = [
            _vif_sums_numpy(
                [reference[i, 0].detach().to(torch.float64).numpy() for reference in references],
                distorted[i, 0].detach().to(torch.float64).numpy(),
                noise_variance,
            )
            for i in range(distorted.shape[0])
        ]
        numerator, denominator = (torch.from_numpy(np.stack(parts)) for parts in zip(*sums))
        return torch.where(denominator > 0, numerator / denominator.clamp(min=torch.finfo(torch.float64).tiny), 1.0)
    refs = [reference.detach().to(torch.float64) for reference in references]
    dist = distorted.detach().to(torch.float64)
    numerator = dist.new_zeros(dist.shape[0], len(refs))
    denominator = dist.new_zeros(dist.shape[0], len(refs))
    for scale in range(1, SCALES + 1):
        size = 2 ** (SCALES + 1 - scale) + 1
        kernel = gaussian_kernel_1d(size, size / 5.0, device=dist.device)
        if scale > 1:
            refs = [_blur_and_subsample(ref, kernel) for ref in refs]
            dist = _blur_and_subsample(dist, kernel)
        for rows in row_bands(dist, size):
            band_refs = [ref[..., rows, :] for ref in refs]
            band_numerator, band_denominator = _vif_sums(band_refs, dist[..., rows, :], kernel, noise_variance)
            numerator += band_numerator
            denominator += band_denominator
    return torch.where(denominator > 0, numerator / denominator.clamp(min=torch.finfo(torch.float64).tiny), 1.0)


def _blur_and_subsample(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return separable_filter(image, kernel, kernel)[..., ::2, ::2].contiguous()


def _vif_sums(refs: Sequence[torch.Tensor], dist: torch.Tensor, kernel: torch.Tensor, noise_variance: float):
    """Numerator and denominator sums (natural log) of one scale over the 'valid' windows of a band: (B, K) each."""
    mu_dist, var_dist = separable_filter(dist, kernel, kernel), separable_filter(dist * dist, kernel, kernel)
    var_dist = var_dist.addcmul_(mu_dist, mu_dist, value=-1).clamp_(min=0)
    dist_informative = var_dist >= EPS
    numerators, denominators = [], []
    for ref in refs:
        mu_ref, var_ref, covariance = (separable_filter(plane, kernel, kernel) for plane in (ref, ref * ref, ref * dist))
        var_ref = var_ref.addcmul_(mu_ref, mu_ref, value=-1)
        var_ref.masked_fill_(var_ref < EPS, 0.0)  # negative -> 0, then the sigma_R^2 < eps rule
        covariance = covariance.addcmul_(mu_ref, mu_dist, value=-1)
        # g = 0 where g < 0 or sigma_D^2 < eps (and then sigma_V^2 = sigma_D^2 < eps -> eps, as in the
        # evaluator); where sigma_R^2 < eps, g and sigma_V^2 do not matter: the term is multiplied by sigma_R^2 = 0.
        gain = (covariance / (var_ref + EPS)).clamp_(min=0).mul_(dist_informative)
        noise = torch.addcmul(var_dist, gain, covariance, value=-1).clamp_(min=EPS).add_(noise_variance)
        signal_to_noise = gain.square_().mul_(var_ref).div_(noise)
        # log10 = ln / ln 10 cancels in the ratio. float32 logs of the float64 1 + x (absolute error
        # 6e-8 per pixel, ~1e-7 relative on the sums) are several times faster than float64 ones on the CPU.
        signal = var_ref.div_(noise_variance)
        numerators.append(torch.log(signal_to_noise.add_(1).to(torch.float32)).sum((1, 2, 3), dtype=torch.float64))
        denominators.append(torch.log(signal.add_(1).to(torch.float32)).sum((1, 2, 3), dtype=torch.float64))
    return torch.stack(numerators, 1), torch.stack(denominators, 1)


def _vif_sums_numpy(refs: Sequence[np.ndarray], dist: np.ndarray, noise_variance: float):
    """Numerator and denominator sums (natural log) of all scales of one image on the CPU: (K,) each.

    The same clamps as :func:`_vif_sums`. Local moments, the gain and sigma_V^2 stay in float64
    (sigma_V^2 = sigma_D^2 - g sigma_RD cancels where the fused image follows the source); the
    signal-to-noise ratios and their logs, which only need relative accuracy, run in float32.
    Every temporary of a band lives in buffers allocated once per scale. The local moments come
    from the C filter (:mod:`native_filter`) where it builds, else from OpenCV.
    """
    numerator, denominator = np.zeros(len(refs)), np.zeros(len(refs))
    refs, dist = [np.ascontiguousarray(ref) for ref in refs], np.ascontiguousarray(dist)  # one row stride for all
    for scale in range(1, SCALES + 1):
        size = 2 ** (SCALES + 1 - scale) + 1
        kernel = gaussian_kernel_1d(size, size / 5.0).numpy()
        if scale > 1:
            refs = [_blur_and_subsample_numpy(ref, kernel) for ref in refs]
            dist = _blur_and_subsample_numpy(dist, kernel)
        bands = band_slices(*dist.shape, size)
        band_rows = bands[0].stop - bands[0].start
        full = np.empty((6, band_rows, dist.shape[1]))  # filter outputs (full size) and one product
        # The C filter fills only the 'valid' columns; the others, cropped only when summing, must be finite.
        full[..., : size // 2] = full[..., dist.shape[1] - size // 2 :] = 0.0
        half = np.empty((3, band_rows, dist.shape[1]), np.float32)
        for rows in bands:
            height, width = rows.stop - rows.start, dist.shape[1]
            radius = size // 2
            # Row-cropped planes stay contiguous (NumPy runs several times faster on them than on
            # 2-D strided views); the 2 * radius border columns are cropped only when summing.
            crop = lambda plane: plane[radius : height - radius]  # noqa: E731
            product, mu_dist, var_dist, mu_ref, var_ref, covariance = (plane[:height] for plane in full)
            var_ref32, gain32, noise32 = (plane[: height - 2 * radius] for plane in half)
            band_dist = dist[rows]
            _local_moments(band_dist, None, kernel, [mu_dist, var_dist], product)
            mu_dist, var_dist = crop(mu_dist), crop(var_dist)
            var_dist -= np.square(mu_dist, out=crop(product))
            # g = 0 where sigma_D^2 < eps: applied to g^2 below (sigma_V^2 is then < eps either way).
            dist_informative = (var_dist >= EPS).astype(np.float32)
            for k, ref in enumerate(refs):
                band_ref = ref[rows]
                _local_moments(band_ref, band_dist, kernel, [mu_ref, var_ref, covariance], product)
                mu, var, cov, scratch = crop(mu_ref), crop(var_ref), crop(covariance), crop(product)
                var -= np.square(mu, out=scratch)
                # negative -> 0, then sigma_R^2 < eps -> 0 (TOZERO keeps values > thresh: var >= eps)
                cv2.threshold(var, _BELOW_EPS, 0.0, cv2.THRESH_TOZERO, dst=var)
                cov -= np.multiply(mu, mu_dist, out=scratch)
                gain = np.divide(cov, np.add(var, EPS, out=mu), out=mu)
                np.maximum(gain, 0.0, out=gain)
                noise = np.subtract(var_dist, np.multiply(gain, cov, out=scratch), out=scratch)
                np.maximum(noise, EPS, out=noise)
                noise += noise_variance
                var_ref32[...], gain32[...], noise32[...] = var, gain, noise
                signal_to_noise = np.square(gain32, out=gain32)
                signal_to_noise *= dist_informative
                signal_to_noise *= var_ref32
                signal_to_noise /= noise32
                signal_to_noise += 1.0
                var_ref32 *= 1.0 / noise_variance
                var_ref32 += 1.0
                columns = slice(radius, width - radius)
                numerator[k] += cv2.sumElems(cv2.log(signal_to_noise)[:, columns])[0]
                denominator[k] += cv2.sumElems(cv2.log(var_ref32)[:, columns])[0]
    return numerator, denominator


def _local_moments(a: np.ndarray, b, kernel: np.ndarray, outputs, product: np.ndarray) -> None:
    """Filter a, a * a and a * b (as many as ``outputs``) into the full-size ``outputs``, of which
    callers use only the 'valid' part: the C kernel (:mod:`native_filter`) where it builds,
    else OpenCV on products formed in ``product``."""
    radius = kernel.shape[0] // 2
    height, width = a.shape
    valid = [out[radius : height - radius, radius : width - radius] for out in outputs]
    if native_filter.local_moments(a, b, kernel, valid):
        return
    for index, out in enumerate(outputs):
        plane = a if index == 0 else np.multiply(a, a if index == 1 else b, out=product)
        cv2.sepFilter2D(plane, -1, kernel, kernel, dst=out, borderType=cv2.BORDER_REPLICATE)


def _blur_and_subsample_numpy(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The 'valid' filter of ``image`` with ``kernel`` along both axes, every other row and column."""
    radius = kernel.shape[0] // 2
    height, width = image.shape
    if min(height, width) < kernel.shape[0]:
        raise ValueError(f"images of size {image.shape} are smaller than the {kernel.shape[0]}-tap window")
    out = np.empty(((height - 2 * radius + 1) // 2, (width - 2 * radius + 1) // 2))
    if native_filter.local_moments(image, None, kernel, [out], step=2):
        return out
    return np.ascontiguousarray(valid_separable_filter(image, kernel)[::2, ::2])


def vif_fusion(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """VIF = VIF(A, F) + VIF(B, F): (B,)."""
    return visual_information_fidelity([ir, vi], fused).sum(1)
