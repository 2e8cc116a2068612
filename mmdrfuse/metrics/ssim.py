"""Differentiable SSIM, one implementation for training (dynamic refresh) and evaluation.

.. math::
    \\mathrm{SSIM}(x, y) = \\operatorname{mean}_{p}
        \\frac{(2\\mu_x\\mu_y + C_1)(2\\sigma_{xy} + C_2)}{(\\mu_x^2 + \\mu_y^2 + C_1)(\\sigma_x^2 + \\sigma_y^2 + C_2)},
    \\quad C_1 = (k_1 L)^2,\\ C_2 = (k_2 L)^2

with local statistics from a window slid over the "valid" region only (no padding).

* Dynamic refresh (NOTES.md): 11x11 Gaussian window, sigma 1.5, L = 1 on [0, 1] images.
* Fusion-paper evaluation (scikit-image ``structural_similarity`` defaults): 7x7 uniform
  window, sample covariance (N / (N - 1)), mean over the map with the 3-pixel border
  cropped, which is exactly the valid region, and ``data_range = 2``.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from mmdrfuse.metrics import filters, native_filter
from mmdrfuse.metrics.filters import box_mean, gaussian_kernel_1d, row_bands, separable_filter


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    window: str = "gaussian",
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    sample_covariance: bool = False,
) -> torch.Tensor:
    """Per-image SSIM of two batches of gray images.

    Args:
        x, y: (B, 1, H, W) tensors, H and W at least ``window_size``.
    Returns:
        (B,) tensor: the mean SSIM map of each image over the valid region.
    """
    if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"ssim expects two (B, 1, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"images of size {tuple(x.shape[-2:])} are smaller than the {window_size}x{window_size} window")
    if window not in ("gaussian", "uniform"):
        raise ValueError(f"window must be 'gaussian' or 'uniform', got {window!r}")
    if filters.use_opencv(x) and filters.use_opencv(y):
        options = (data_range, window, window_size, sigma, k1, k2, sample_covariance)
        planes = [[image[i, 0].detach().to(torch.float64).numpy() for image in (x, y)] for i in range(x.shape[0])]
        means = [ssim_means_numpy(x_plane, [y_plane], *options)[0] for x_plane, y_plane in planes]
        return torch.tensor(means, dtype=torch.float64).to(x.dtype)
    total = 0.0
    for rows in row_bands(x, window_size):
        band = _ssim_map(x[..., rows, :], y[..., rows, :], data_range, window, window_size, sigma, k1, k2, sample_covariance)
        total = total + band.sum((1, 2, 3))
    return total / ((x.shape[-2] - window_size + 1) * (x.shape[-1] - window_size + 1))


def _ssim_map(x, y, data_range, window, window_size, sigma, k1, k2, sample_covariance) -> torch.Tensor:
    """The SSIM map of the 'valid' windows of one band of rows: (B, 1, H', W')."""
    kernel = gaussian_kernel_1d(window_size, sigma, dtype=x.dtype, device=x.device) if window == "gaussian" else None

    def local_mean(plane: torch.Tensor) -> torch.Tensor:
        return box_mean(plane, window_size) if kernel is None else separable_filter(plane, kernel, kernel)

    mu_x, mu_y, xx, yy, xy = (local_mean(plane) for plane in (x, y, x * x, y * y, x * y))
    cov_norm = window_size**2 / (window_size**2 - 1) if sample_covariance else 1.0
    mu_xy = mu_x * mu_y
    mu_sq = torch.addcmul(mu_x * mu_x, mu_y, mu_y)
    var_sum = (xx + yy - mu_sq) * cov_norm
    cov_xy = (xy - mu_xy) * cov_norm
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    return ((2 * mu_xy + c1) * (2 * cov_xy + c2)) / ((mu_sq + c1) * (var_sum + c2))


def ssim_means_numpy(
    x: np.ndarray, ys: Sequence[np.ndarray], data_range, window, window_size, sigma, k1, k2, sample_covariance
) -> list:
    """Mean SSIM of one (H, W) float64 array against each of ``ys`` on the CPU, over bands of rows:
    :func:`ssim`'s CPU path (same options) for one reference and several images.

    x's local statistics are shared by all pairs. With :math:`\\sigma` unnormalised (population)
    moments, the sample-covariance factor n = N / (N - 1) cancels into :math:`C_2 / n`:
    :math:`(2\\sigma_{xy} n + C_2) / ((\\sigma_x^2 + \\sigma_y^2) n + C_2) = (2\\sigma_{xy} + C_2 / n) / (\\sigma_x^2 + \\sigma_y^2 + C_2 / n)`.
    Planes are row-cropped only (contiguous); the border columns are cropped when summing.

    Args:
        x: float64 (H, W) array, H and W at least ``window_size``.
        ys: float64 (H, W) arrays.
    Returns:
        ``[mean SSIM of x and ys[k] for each k]`` over the valid region.
    """
    options = (data_range, window, window_size, sigma, k1, k2, sample_covariance)
    return ssim_means_numpy_many([(x, ys)], *options)[0]


def ssim_means_numpy_many(
    groups: Sequence, data_range, window, window_size, sigma, k1, k2, sample_covariance
) -> list:
    """:func:`ssim_means_numpy` of each ``(x, ys)`` of ``groups`` (arrays of one shape), in one pass.

    The local mean and mean square of an array object that is a ``y`` of several pairs (the
    infrared plane of every channel of an RGB image whose channels are equal) are computed once per
    band; every value is the one :func:`ssim_means_numpy` computes for its group alone.
    """
    arrays = [array for x, ys in groups for array in (x, *ys)]
    shape = groups[0][0].shape if groups else (0, 0)
    if any(array.ndim != 2 or array.dtype != np.float64 or array.shape != shape for array in arrays):
        raise ValueError(f"ssim_means_numpy expects float64 (H, W) arrays of one shape, got "
                         f"{[(str(array.dtype), array.shape) for array in arrays]}")
    if min(shape) < window_size:
        raise ValueError(f"images of size {shape} are smaller than the {window_size}x{window_size} window")
    if window not in ("gaussian", "uniform"):
        raise ValueError(f"window must be 'gaussian' or 'uniform', got {window!r}")
    height, width = shape
    radius = window_size // 2
    bands = filters.band_slices(height, width, window_size)
    band_rows = bands[0].stop - bands[0].start
    if window == "gaussian":
        kernel = gaussian_kernel_1d(window_size, sigma).numpy()
    else:
        kernel = np.full(window_size, 1.0 / window_size)
    distinct = {id(array): array for array in arrays}
    index = {key: i for i, key in enumerate(distinct)}
    uses = [0] * len(distinct)
    for _, ys in groups:
        for y in ys:
            uses[index[id(y)]] += 1
    # Before the buffers: its whole-image temporaries then reuse freed memory (2 to 5 ms less on 1280x1024).
    moments, cross = _band_moments(list(distinct.values()), kernel, window == "uniform", band_rows)
    shared = {i: np.empty((2, band_rows, width)) for i, count in enumerate(uses) if count > 1}
    buffers = np.empty((8 + 2 * len(shared), band_rows, width))
    # The C filter fills only the 'valid' columns; the others, cropped only when summing, must be finite.
    buffers[..., :radius] = buffers[..., width - radius :] = 0.0
    for i, plane in zip(shared, buffers[8:].reshape(len(shared), 2, band_rows, width)):
        shared[i] = plane
    cov_norm = window_size**2 / (window_size**2 - 1) if sample_covariance else 1.0
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2 / cov_norm
    totals = [[0.0] * len(ys) for _, ys in groups]
    for rows in bands:
        h = rows.stop - rows.start
        crop = lambda plane: plane[radius : h - radius]  # noqa: E731
        for i, (mean, square) in shared.items():
            moments(rows, i, mean[:h], square[:h])
        for (x, ys), group_totals in zip(groups, totals):
            mu_x, xx, mu_y, yy, xy, numerator, denominator, x_square = (plane[:h] for plane in buffers[:8])
            moments(rows, index[id(x)], mu_x, xx)
            mu_x, xx, x_square = crop(mu_x), crop(xx), crop(x_square)
            np.square(mu_x, out=x_square)
            for k, y in enumerate(ys):
                i = index[id(y)]
                if i in shared:  # read only below
                    y_mean, y_square = shared[i][0, :h], shared[i][1, :h]
                else:
                    y_mean, y_square = mu_y, yy
                    moments(rows, i, y_mean, y_square)
                cross(rows, index[id(x)], i, xy)
                my, yy_, xy_, num, den = crop(y_mean), crop(y_square), crop(xy), crop(numerator), crop(denominator)
                # cv2.addWeighted fuses a * alpha + b * beta + gamma into one float64 pass.
                mean_product = np.multiply(mu_x, my, out=num)
                cv2.addWeighted(xy_, 2.0, mean_product, -2.0, c2, dst=xy_)  # 2 sigma_xy + C_2 / n
                cv2.addWeighted(mean_product, 2.0, mean_product, 0.0, c1, dst=num)  # 2 mu_x mu_y + C_1
                num *= xy_
                square_sum = np.square(my, out=xy_)
                square_sum += x_square  # mu_x^2 + mu_y^2
                cv2.addWeighted(xx, 1.0, yy_, 1.0, c2, dst=den)
                den -= square_sum  # sigma_x^2 + sigma_y^2 + C_2 / n
                square_sum += c1
                den *= square_sum
                num /= den
                group_totals[k] += cv2.sumElems(num[:, radius : width - radius])[0]
    count = (height - window_size + 1) * (width - window_size + 1)
    return [[total / count for total in group_totals] for group_totals in totals]


def _band_moments(images: Sequence[np.ndarray], kernel: np.ndarray, uniform: bool, band_rows: int):
    """``moments(rows, i, mean, square)`` and ``cross(rows, i, j, product)``: the local means of
    images[i] and images[i] ** 2, and of images[i] * images[j], over the input rows ``rows`` (at most
    ``band_rows``) into full-size (rows, W) planes, of which callers use only the 'valid' part.

    The C filter (:mod:`native_filter`) where it builds (the product formed here is the one it
    forms itself for a third output, and filtered by the same row function). Else OpenCV, straight
    from 8-bit data where the images hold only 8-bit values (two to three times faster than from
    float64, with the same exact integer sums), with ``boxFilter`` and ``sqrBoxFilter`` for the
    uniform window.
    """
    radius = kernel.shape[0] // 2
    if native_filter.available():
        images = [np.ascontiguousarray(image) for image in images]
        product = np.empty((band_rows, images[0].shape[1]))

        def valid(outputs):
            return [out[radius : out.shape[0] - radius, radius : out.shape[1] - radius] for out in outputs]

        def moments(rows, i, mean, square):
            native_filter.local_moments(images[i][rows], None, kernel, valid([mean, square]))

        def cross(rows, i, j, out):
            plane = np.multiply(images[j][rows], images[i][rows], out=product[: rows.stop - rows.start])
            native_filter.local_moments(plane, None, kernel, valid([out]))

        return moments, cross
    eight_bit = [filters.uint8_if_exact(image) for image in images]
    if all(image is not None for image in eight_bit):
        images, product_type = eight_bit, np.uint16  # products of 8-bit values fit uint16
    else:
        product_type = np.float64
    product = np.empty((band_rows, images[0].shape[1]), product_type)
    size = (kernel.shape[0], kernel.shape[0])

    def local_mean(plane, out):
        if uniform:
            cv2.boxFilter(plane, cv2.CV_64F, size, dst=out, normalize=True, borderType=cv2.BORDER_REPLICATE)
        else:
            cv2.sepFilter2D(plane, cv2.CV_64F, kernel, kernel, dst=out, borderType=cv2.BORDER_REPLICATE)

    def moments(rows, i, mean, square):
        plane = images[i][rows]
        local_mean(plane, mean)
        if uniform:
            cv2.sqrBoxFilter(plane, cv2.CV_64F, size, dst=square, normalize=True, borderType=cv2.BORDER_REPLICATE)
        else:
            local_mean(np.multiply(plane, plane, dtype=product_type, out=product[: plane.shape[0]]), square)

    def cross(rows, i, j, out):
        local_mean(np.multiply(images[i][rows], images[j][rows], dtype=product_type,
                               out=product[: rows.stop - rows.start]), out)

    return moments, cross


def ssim_fusion(fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
    """Fusion-paper SSIM = SSIM(F, A) + SSIM(F, B) (values up to 2) on the 0..255 scale: (B,).

    scikit-image ``structural_similarity`` defaults with ``data_range=2`` (what older versions
    inferred for float input): 7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance,
    mean over the map without its 3-pixel border.
    """
    if filters.use_opencv(fused):
        if fused.shape != ir.shape or fused.shape != vi.shape or fused.ndim != 4 or fused.shape[1] != 1:
            raise ValueError(f"ssim expects (B, 1, H, W) tensors of one shape, got {[tuple(t.shape) for t in (fused, ir, vi)]}")
        if min(fused.shape[-2:]) < 7:
            raise ValueError(f"images of size {tuple(fused.shape[-2:])} are smaller than the 7x7 window")
        values = []
        for i in range(fused.shape[0]):
            f, a, b = (image[i, 0].detach().to(torch.float64).numpy() for image in (fused, ir, vi))
            values.append(sum(ssim_means_numpy(f, [a, b], 2.0, "uniform", 7, 1.5, 0.01, 0.03, True)))
        return torch.tensor(values, dtype=torch.float64)
    fused = fused.to(torch.float64)
    options = dict(data_range=2.0, window="uniform", window_size=7, sample_covariance=True)
    return ssim(fused, ir.to(torch.float64), **options) + ssim(fused, vi.to(torch.float64), **options)
