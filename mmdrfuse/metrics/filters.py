"""Windowed sums shared by the metrics: one entry point per filter, two back ends.

.. math::
    (x \\star k)(p) = \\sum_{i, j} k_y(i)\\, k_x(j)\\, x(p_y + i - r_y,\\ p_x + j - r_x)

(correlation with the separable kernel :math:`k = k_y k_x^T`, radius :math:`r = (\\text{len} - 1) / 2`).

Only the positions where the window lies inside the image are kept (SciPy's
``convolve2d(..., mode="valid")`` with the kernel rotated by 180 degrees); a 'same' filter with
zero padding is a 'valid' filter of a zero-padded image (:func:`zero_padded_bands`).

Back ends: on the CPU without autograd (:func:`use_opencv`), NumPy arrays and OpenCV
(``cv2.sepFilter2D`` / ``cv2.boxFilter``), several times faster than torch's CPU convolution
for large single images; elsewhere (CUDA, or when gradients are needed)
``torch.nn.functional.conv2d``. Both give the same numbers up to floating-point rounding. The
metrics with a CPU path of their own (VIF, Qabf, SSIM) use :func:`band_slices`,
:func:`valid_separable_filter` and :func:`uint8_if_exact` directly.

On the CPU the per-pixel work of a metric runs over bands of rows (:func:`band_slices`) in
buffers allocated once per call: the temporaries of a band stay in cache and out of the
allocator's page-fault path (whole-image float64 temporaries of 10 MB per plane made the
metrics about twice as slow). Within a band, planes are cropped by rows only, which keeps them
contiguous: NumPy runs two to three times slower on column-cropped (2-D strided) views.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

BAND_PIXELS = 1 << 17  # output pixels per band on the CPU: about 1 MB per float64 plane


def use_opencv(images: torch.Tensor) -> bool:
    """Whether ``images`` take the NumPy / OpenCV CPU path (on the CPU, no gradient wanted)."""
    return images.device.type == "cpu" and not (torch.is_grad_enabled() and images.requires_grad)


def band_height(images: torch.Tensor) -> int:
    """Output rows per band: about ``BAND_PIXELS`` pixels on the CPU, the whole image on GPUs and under autograd."""
    if use_opencv(images):
        return max(8, BAND_PIXELS // images.shape[-1])
    return max(images.shape[-2], 1)


def band_slices(height: int, width: int, window: int) -> list:
    """Slices of input rows of an (height, width) CPU image whose 'valid' outputs for a window of
    ``window`` rows tile the output rows once, about ``BAND_PIXELS`` output pixels per band."""
    out_rows = height - window + 1
    step = max(8, BAND_PIXELS // width)
    return [slice(start, min(start + step, out_rows) + window - 1) for start in range(0, out_rows, step)]


def row_bands(images: torch.Tensor, window: int) -> list:
    """Slices of input rows whose 'valid' outputs for a window of ``window`` rows tile the output rows once."""
    if use_opencv(images):
        return band_slices(images.shape[-2], images.shape[-1], window)
    return [slice(0, images.shape[-2])]


def uint8_if_exact(image: np.ndarray):
    """``image`` as uint8 when it holds only integers in 0..255 (8-bit images), else None.

    OpenCV then filters straight from 8-bit data (products fit uint16), two to three times faster
    than from float64, and with the same exact integer sums."""
    as_uint8 = image.astype(np.uint8)
    # Out-of-range values wrap and NaN gives a NaN norm: neither compares equal to 0.
    return as_uint8 if cv2.norm(image, as_uint8.astype(image.dtype), cv2.NORM_INF) == 0 else None


def float32_if_exact(image: np.ndarray) -> np.ndarray:
    """``image`` as float32 when that rounds nothing away (8-bit values always), else unchanged."""
    single = image.astype(np.float32)
    return single if cv2.norm(image, single.astype(image.dtype), cv2.NORM_INF) == 0 else image


def valid_separable_filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate one float (H, W) array with ``kernel`` (1-D, odd length) along both axes, 'valid'
    windows only: (H - n + 1, W - n + 1), a view into OpenCV's (SIMD) full-size output."""
    n = kernel.shape[0]
    if image.shape[0] < n or image.shape[1] < n:
        raise ValueError(f"images of size {image.shape} are smaller than the {n}x{n} window")
    # The border rule only affects the rows and columns cropped here.
    full = cv2.sepFilter2D(image, cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_REPLICATE)
    r = n // 2
    return full[r : image.shape[0] - r, r : image.shape[1] - r]


def zero_padded_bands(images: torch.Tensor, radius: int):
    """Yield bands of ``images`` with ``radius`` rows of context, zero-padded by ``radius`` where the image ends.

    A 'valid' filter of radius ``radius`` on each band gives the rows of the 'same' zero-padded
    filter of the whole image, in order.
    """
    height = images.shape[-2]
    step = band_height(images)
    for start in range(0, height, step):
        stop = min(start + step, height)
        low, high = max(start - radius, 0), min(stop + radius, height)
        pads = (radius, radius, low - (start - radius), (stop + radius) - high)
        yield F.pad(images[..., low:high, :], pads)


def _check(images: torch.Tensor, size_y: int, size_x: int) -> None:
    if images.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(images.shape)}")
    if size_y % 2 == 0 or size_x % 2 == 0:
        raise ValueError(f"kernel sizes must be odd, got {size_y}x{size_x}")
    if images.shape[-2] < size_y or images.shape[-1] < size_x:
        raise ValueError(f"images of size {tuple(images.shape[-2:])} are smaller than the {size_y}x{size_x} window")


def _opencv_planes(images: torch.Tensor, filter_plane, size_y: int, size_x: int) -> torch.Tensor:
    b, c, h, w = images.shape
    images = images.detach()
    out = torch.empty((b, c, h, w), dtype=images.dtype)
    for i in range(b):
        for j in range(c):
            # A band of rows of one plane is already contiguous: no copy.
            filter_plane(images[i, j].contiguous().numpy(), out[i, j].numpy())
    ry, rx = size_y // 2, size_x // 2
    return out[..., ry : h - ry, rx : w - rx]


def separable_filter(images: torch.Tensor, kernel_y: torch.Tensor, kernel_x: torch.Tensor) -> torch.Tensor:
    """Correlate every plane of ``images`` (B, C, H, W) with ``kernel_y`` (column) times ``kernel_x`` (row).

    Returns (B, C, H - len_y + 1, W - len_x + 1).
    """
    size_y, size_x = kernel_y.numel(), kernel_x.numel()
    _check(images, size_y, size_x)
    if use_opencv(images):
        ky = kernel_y.detach().to(torch.float64).reshape(-1, 1).numpy()
        kx = kernel_x.detach().to(torch.float64).reshape(1, -1).numpy()

        def filter_plane(src, dst):
            # The border rule only affects the rows and columns cropped afterwards.
            cv2.sepFilter2D(src, -1, kx, ky, dst=dst, borderType=cv2.BORDER_REPLICATE)

        return _opencv_planes(images, filter_plane, size_y, size_x)
    b, c, h, w = images.shape
    out = F.conv2d(images.reshape(b * c, 1, h, w), kernel_y.to(images).reshape(1, 1, -1, 1))
    out = F.conv2d(out, kernel_x.to(images).reshape(1, 1, 1, -1))
    return out.reshape(b, c, *out.shape[-2:])


def box_mean(images: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over every ``size`` x ``size`` window inside the image ("valid"): (B, C, H - size + 1, W - size + 1)."""
    _check(images, size, size)
    if use_opencv(images):

        def filter_plane(src, dst):
            cv2.boxFilter(src, -1, (size, size), dst=dst, normalize=True, borderType=cv2.BORDER_REPLICATE)

        return _opencv_planes(images, filter_plane, size, size)
    b, c, h, w = images.shape
    out = F.avg_pool2d(images.reshape(b * c, 1, h, w), size, stride=1)
    return out.reshape(b, c, *out.shape[-2:])


def gaussian_kernel_1d(size: int, sigma: float, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps; its outer product with itself is the normalised 2-D window."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)
