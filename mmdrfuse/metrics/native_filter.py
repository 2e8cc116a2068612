"""float64 'valid' filtering with a symmetric separable kernel, in C (``symmetric_filter.c``, package
data beside this module, built and cached by :mod:`mmdrfuse.native`, whose cache key covers the C text).

.. math::
    t(y, x) = k_r\\, p(y + r, x) + \\sum_{i < r} k_i \\big(p(y + i, x) + p(y + 2r - i, x)\\big), \\quad
    o(y, x) = k_r\\, t(y, x + r) + \\sum_{i < r} k_i \\big(t(y, x + i) + t(y, x + 2r - i)\\big)

for a kernel of :math:`2r + 1` taps with :math:`k_i = k_{2r - i}` (the Gaussian and box windows
of VIF and SSIM): the symmetry halves the multiplies. One call gives the local means of a, a * a
and a * b (:func:`local_moments`); the vertical pass of a and a * a loads each input value once
for both. ``gcc -O3 -march=native`` vectorises both passes along x, one function per radius
1..8 with the taps unrolled (any other radius takes a generic loop). OpenCV's float64
``sepFilter2D`` is barely vectorised: on a 1280-wide band with the 17-tap VIF window this runs
about 3 ms per plane against OpenCV's 6 ms (AMD EPYC, AVX-512), and the three moments of a
source 9 ms against 21 ms with NumPy's products. The sums are those of OpenCV up to rounding
(about 1e-16 relative; with FMA contraction a * a is not rounded before it is summed, products
of 8-bit values are exact either way).

:func:`local_moments` returns False where the kernel cannot be built (no compiler, or
``MMDRFUSE_NO_NATIVE``): callers then use OpenCV.
"""
from __future__ import annotations

import ctypes
from importlib import resources
from typing import Optional, Sequence

import numpy as np

from mmdrfuse import native

KERNEL_FILE = "symmetric_filter.c"  # package data beside this module

_library: dict = {}  # native.load_once's memo
_P, _I, _S = ctypes.c_void_p, ctypes.c_int, ctypes.c_ssize_t
SIGNATURES = {"local_moments": [_P, _P, _I, _I, _S, _I, _P, _I, _I, _P, _S]}


def kernel_source() -> str:
    """The C kernel's text, read from the installed package (``mmdrfuse/metrics/symmetric_filter.c``)."""
    return resources.files(__package__).joinpath(KERNEL_FILE).read_text(encoding="utf-8")


def _function():
    """The C ``local_moments``, or None when it cannot be built (remembered: no retry per call)."""
    library = native.load_once(_library, "symmetric_filter", kernel_source(), SIGNATURES)
    return None if library is None else library.local_moments


def available() -> bool:
    """Whether the C kernel builds and loads here (``MMDRFUSE_NO_NATIVE`` unset, a compiler works)."""
    return _function() is not None


def local_moments(
    a: np.ndarray, b: Optional[np.ndarray], kernel: np.ndarray, outputs: Sequence[np.ndarray], step: int = 1
) -> bool:
    """Filter a, then a * a, then a * b (as many as ``outputs``) with ``kernel`` along both axes, 'valid' windows.

    Args:
        a, b: float64 (H, W) arrays of one shape and row stride, rows contiguous; ``b`` is
            used (and needed) only for a third output.
        kernel: float64 (2r + 1,) with ``kernel == kernel[::-1]``.
        outputs: 1 to 3 float64 arrays with contiguous rows and one row stride, of shape
            ``(ceil((H - 2r) / step), ceil((W - 2r) / step))``: every ``step``-th row and
            column of the 'valid' correlation.
    Returns:
        False (outputs untouched) when the C kernel is unavailable, else True.
    """
    function = _function()
    if function is None:
        return False
    kernel = np.ascontiguousarray(kernel, dtype=np.float64)
    if kernel.ndim != 1 or kernel.shape[0] % 2 == 0 or not np.array_equal(kernel, kernel[::-1]):
        raise ValueError("the kernel must be 1-D, of odd length and symmetric")
    radius = kernel.shape[0] // 2
    height, width = a.shape
    if height < kernel.shape[0] or width < kernel.shape[0]:
        raise ValueError(f"images of size {a.shape} are smaller than the {kernel.shape[0]}-tap window")
    if not 1 <= len(outputs) <= 3 or (len(outputs) == 3) != (b is not None) or step < 1:
        raise ValueError(f"expected 1 or 2 outputs without b, or 3 with b, and step >= 1: {len(outputs)}, step {step}")
    for plane in (a,) if b is None else (a, b):
        if plane.dtype != np.float64 or plane.shape != a.shape or plane.strides != a.strides or plane.strides[1] != 8:
            raise ValueError("inputs must be float64 arrays of one shape and stride with contiguous rows")
    expected = (-(-(height - 2 * radius) // step), -(-(width - 2 * radius) // step))
    for out in outputs:
        if out.dtype != np.float64 or out.shape != expected or out.strides != outputs[0].strides \
                or out.strides[1] != 8 or not out.flags.writeable:
            raise ValueError(f"outputs must be writeable float64 {expected} arrays of one stride with contiguous rows")
    pointers = (ctypes.c_void_p * len(outputs))(*[out.ctypes.data for out in outputs])
    code = function(a.ctypes.data, None if b is None else b.ctypes.data, height, width, a.strides[0] // 8,
                    len(outputs), kernel.ctypes.data, radius, step, pointers, outputs[0].strides[0] // 8)
    if code == -1:
        raise MemoryError("the native filter could not allocate its row buffers")
    if code:
        raise ValueError(f"the native filter rejected its arguments (code {code})")
    return True
