"""Per-pixel maps of 8-bit planes summed in C (``pixel_sums.c``, package data beside this module,
built and cached by :mod:`mmdrfuse.native`, whose cache key covers the C text): VIFB's SSIM,
average gradient and edge intensity in one pass each, without float64 copies of the planes or
full-size intermediate planes.

* :func:`ssim_sums`: for pairs (a, b) of planes, :math:`\\sum_p` of the SSIM map over the valid
  windows of a symmetric kernel k (2r + 1 taps, applied along both axes),

  .. math::
      \\frac{(2\\mu_a\\mu_b + C_1)(2(\\overline{ab} - \\mu_a\\mu_b) + C_2)}
           {(\\mu_a^2 + \\mu_b^2 + C_1)(\\overline{a^2} + \\overline{b^2} - \\mu_a^2 - \\mu_b^2 + C_2)}

  with population moments; each plane's mean and mean square are filtered once per row however
  many pairs use it.
* :func:`gradient_sum`: :math:`\\sum_p \\sqrt{(g_x^2 + g_y^2) / 2}` with MATLAB's ``gradient``.
* :func:`sobel_sum`: :math:`\\sum_p \\sqrt{s_x^2 + s_y^2}`, 3x3 Sobel, replicated border.
* :func:`mutual_information`: :math:`H(a) + H(b) - H(a, b)` in nats from the 256 x 256 joint
  histogram, :math:`H = -\\sum p \\log p` over the non-zero bins; :func:`histogram`: the 256-bin one.
* :func:`difference_sums`: :math:`\\sum (f_{y, x+1} - f_{y, x})^2` and :math:`\\sum (f_{y+1, x} - f_{y, x})^2`,
  exact integers (OpenCV's ``norm`` of 8-bit planes rounds them).

The local moments are those of :mod:`native_filter` up to rounding (1e-16 relative), the
gradient and Sobel roots are the very doubles MATLAB computes (roots of exact integers), and the
sums are taken in 8 interleaved partial sums (the entropies' in bin order): the results differ
from NumPy's and OpenCV's in the last bits only. Each function returns None where the kernel cannot be built (no compiler,
or ``MMDRFUSE_NO_NATIVE``): callers then use their NumPy / OpenCV path.
"""
from __future__ import annotations

import ctypes
from importlib import resources
from typing import Optional, Sequence, Tuple

import numpy as np

from mmdrfuse import native

KERNEL_FILE = "pixel_sums.c"  # package data beside this module
MAX_TAPS = 61  # pixel_sums.c's MAX_TAPS

_library: dict = {}  # native.load_once's memo
_P, _I, _S, _D = ctypes.c_void_p, ctypes.c_int, ctypes.c_ssize_t, ctypes.c_double
SIGNATURES = {
    "ssim_sums": [_P, _I, _P, _I, _I, _I, _S, _P, _I, _D, _D, _P],
    "gradient_sum": [_P, _I, _I, _S, _P],
    "sobel_sum": [_P, _I, _I, _S, _P],
    "mutual_information": [_P, _P, _I, _I, _S, _P],
    "histogram": [_P, _I, _I, _S, _P],
    "difference_sums": [_P, _I, _I, _S, _P],
}


def kernel_source() -> str:
    """The C kernel's text, read from the installed package (``mmdrfuse/metrics/pixel_sums.c``)."""
    return resources.files(__package__).joinpath(KERNEL_FILE).read_text(encoding="utf-8")


def _library_or_none():
    """The loaded library with its signatures set, or None when it cannot be built (remembered)."""
    return native.load_once(_library, "pixel_sums", kernel_source(), SIGNATURES)


def available() -> bool:
    """Whether the C kernels build and load here (``MMDRFUSE_NO_NATIVE`` unset, a compiler works)."""
    return _library_or_none() is not None


def _check_planes(planes: Sequence[np.ndarray]) -> Tuple[int, int, int]:
    """(H, W, row stride) of 2-D uint8 planes of one shape and stride with contiguous rows."""
    first = planes[0]
    for plane in planes:
        if plane.dtype != np.uint8 or plane.ndim != 2 or plane.shape != first.shape or plane.strides != first.strides \
                or plane.strides[1] != 1:
            raise ValueError("planes must be uint8 (H, W) arrays of one shape and stride with contiguous rows, got "
                             f"{[(str(plane.dtype), plane.shape, plane.strides) for plane in planes]}")
    return first.shape[0], first.shape[1], first.strides[0]


def _raise_on(code: int, what: str) -> None:
    if code == -1:
        raise MemoryError(f"the native {what} could not allocate its row buffers")
    if code:
        raise ValueError(f"the native {what} rejected its arguments (code {code})")


def ssim_sums(planes: Sequence[np.ndarray], pairs: Sequence[Tuple[int, int]], kernel: np.ndarray,
              c1: float, c2: float) -> Optional[list]:
    """For each ``(i, j)`` of ``pairs``, the sum of the SSIM map of ``planes[i]`` and ``planes[j]``
    over the valid windows of ``kernel`` (see the module docstring).

    Args:
        planes: uint8 (H, W) arrays of one shape and row stride, rows contiguous, H and W at
            least the kernel's length.
        pairs: indices into ``planes``.
        kernel: float64 (2r + 1,) with ``kernel == kernel[::-1]``.
        c1, c2: the constants :math:`C_1, C_2`.
    Returns:
        ``[sum for each pair]`` (divide by (H - 2r)(W - 2r) for the mean), or None when the C
        kernel is unavailable.
    """
    library = _library_or_none()
    if library is None:
        return None
    kernel = np.ascontiguousarray(kernel, dtype=np.float64)
    if kernel.ndim != 1 or kernel.shape[0] % 2 == 0 or not np.array_equal(kernel, kernel[::-1]):
        raise ValueError("the kernel must be 1-D, of odd length and symmetric")
    if kernel.shape[0] > MAX_TAPS:
        raise ValueError(f"the kernel has {kernel.shape[0]} taps, more than the C pass's {MAX_TAPS}")
    height, width, stride = _check_planes(planes)
    if min(height, width) < kernel.shape[0]:
        raise ValueError(f"images of size {(height, width)} are smaller than the {kernel.shape[0]}-tap window")
    indices = np.ascontiguousarray(pairs, dtype=np.intc).reshape(-1)
    if not pairs or indices.shape[0] != 2 * len(pairs) or indices.min() < 0 or indices.max() >= len(planes):
        raise ValueError(f"pairs must be (i, j) indices into the {len(planes)} planes, got {pairs}")
    pointers = (ctypes.c_void_p * len(planes))(*[plane.ctypes.data for plane in planes])
    sums = np.empty(len(pairs))
    code = library.ssim_sums(pointers, len(planes), indices.ctypes.data, len(pairs), height, width, stride,
                             kernel.ctypes.data, kernel.shape[0] // 2, c1, c2, sums.ctypes.data)
    _raise_on(code, "SSIM")
    return sums.tolist()


def _plane_sum(name: str, plane: np.ndarray, minimum: int) -> Optional[float]:
    library = _library_or_none()
    if library is None:
        return None
    height, width, stride = _check_planes([plane])
    if min(height, width) < minimum:
        raise ValueError(f"{name} needs planes of at least {minimum}x{minimum}, got {plane.shape}")
    total = ctypes.c_double()
    _raise_on(getattr(library, name)(plane.ctypes.data, height, width, stride, ctypes.byref(total)), name)
    return total.value


def gradient_sum(plane: np.ndarray) -> Optional[float]:
    """:math:`\\sum_p \\sqrt{(g_x^2 + g_y^2) / 2}` of a uint8 (H, W) plane (rows contiguous,
    H, W >= 2) with MATLAB's ``gradient``; None when the C kernel is unavailable."""
    return _plane_sum("gradient_sum", plane, 2)


def sobel_sum(plane: np.ndarray) -> Optional[float]:
    """:math:`\\sum_p \\sqrt{s_x^2 + s_y^2}` of a uint8 (H, W) plane (rows contiguous), 3x3 Sobel
    with replicated borders; None when the C kernel is unavailable."""
    return _plane_sum("sobel_sum", plane, 1)


def mutual_information(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """:math:`I(a; b) = H(a) + H(b) - H(a, b)` in nats of two uint8 (H, W) planes of one shape and
    stride (rows contiguous) from their joint histogram; None when the C kernel is unavailable."""
    library = _library_or_none()
    if library is None:
        return None
    height, width, stride = _check_planes([a, b])
    nats = ctypes.c_double()
    _raise_on(library.mutual_information(a.ctypes.data, b.ctypes.data, height, width, stride, ctypes.byref(nats)),
              "mutual_information")
    return nats.value


def histogram(plane: np.ndarray) -> Optional[np.ndarray]:
    """The 256-bin histogram of a uint8 (H, W) plane (rows contiguous) as float64 counts (exact);
    None when the C kernel is unavailable."""
    library = _library_or_none()
    if library is None:
        return None
    height, width, stride = _check_planes([plane])
    counts = np.empty(256)
    _raise_on(library.histogram(plane.ctypes.data, height, width, stride, counts.ctypes.data), "histogram")
    return counts


def difference_sums(plane: np.ndarray) -> Optional[tuple]:
    """(sum of squared differences along rows, down columns) of a uint8 (H, W) plane (rows
    contiguous), exact; None when the C kernel is unavailable."""
    library = _library_or_none()
    if library is None:
        return None
    height, width, stride = _check_planes([plane])
    sums = np.empty(2)
    _raise_on(library.difference_sums(plane.ctypes.data, height, width, stride, sums.ctypes.data), "difference_sums")
    return float(sums[0]), float(sums[1])
