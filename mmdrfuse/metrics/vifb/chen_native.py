"""The per-pixel work of Qcb and Qcv in C, one pass each (``chen_kernels.c``, package data beside this
module, built and cached by :mod:`mmdrfuse.native`, whose cache key covers the C text).

* :func:`contrast_power`: Qcb's :math:`C' = C^3 / (C^2 + 10^{-4})`,
  :math:`C = |r\\, (G_2 \\star I) / (G_4 \\star I) - 1|`, the 31x31 Gaussians applied in space with
  filter2's zero padding (symmetric taps: 16 multiplies per pass, one load for both Gaussians).
  In place of two inverse DFTs, their spectrum products, the refiltered 15-pixel frame and eight
  NumPy passes of the frequency-domain path.
* :func:`chen_blum_sum`: :math:`\\sum Q` over the pixels and whether some C' is 0 (the NaN rule).
* :func:`block_square_sums`: Qcv's :math:`\\sum_{16 \\times 16} d^2` per block.
* :func:`difference_product`: Qcv's :math:`(X_i - X_F) \\odot M` of two spectra (NumPy: two passes).
* :func:`saliency_sums`: Qcv's :math:`\\sum_{16 \\times 16} g^5` per block, g the Sobel magnitude of a
  uint8 image, zero padding.

The values equal those of the NumPy path up to rounding (different summation orders; with FMA
contraction some products are not rounded before they are added): Qcb and Qcv to 6e-15 relative
on VIFB's labMan (difference_product: bit for bit). Each function returns None (or False) where
the kernels cannot be built (no compiler, or ``MMDRFUSE_NO_NATIVE``): callers then use NumPy and
OpenCV.
"""
from __future__ import annotations

import ctypes
from importlib import resources
from typing import Optional, Tuple

import numpy as np

from mmdrfuse import native

KERNEL_FILE = "chen_kernels.c"  # package data beside this module
BLOCK = 16

_library: dict = {}  # native.load_once's memo

_P, _I, _S = ctypes.c_void_p, ctypes.c_int, ctypes.c_ssize_t
SIGNATURES = {
    "contrast_power": [_P, _I, _I, _S, _P, _P, ctypes.c_double, _P, _S],
    "chen_blum_sum": [_P, _P, _P, _I, _I, _S, _P, _P],
    "block_square_sums": [_P, _I, _I, _S, _P],
    "saliency_sums": [_P, _I, _I, _S, _P],
    "difference_product": [_P, _P, _P, _P, _S],
}


def kernel_source() -> str:
    """The C kernels' text, read from the installed package (``mmdrfuse/metrics/vifb/chen_kernels.c``)."""
    return resources.files(__package__).joinpath(KERNEL_FILE).read_text(encoding="utf-8")


def _library_or_none():
    """The loaded library with its signatures set, or None when it cannot be built (remembered)."""
    return native.load_once(_library, "chen_kernels", kernel_source(), SIGNATURES)


def available() -> bool:
    """Whether the C kernels build and load here (``MMDRFUSE_NO_NATIVE`` unset, a compiler works)."""
    return _library_or_none() is not None


def _check_plane(plane: np.ndarray, shape, dtype=np.float64, writeable: bool = False) -> None:
    if plane.dtype != dtype or plane.shape != tuple(shape) or plane.ndim != 2 or plane.strides[1] != plane.itemsize \
            or (writeable and not plane.flags.writeable):
        raise ValueError(f"expected a {'writeable ' if writeable else ''}{np.dtype(dtype).name} {tuple(shape)} array "
                         f"with contiguous rows, got {plane.dtype} {plane.shape} strides {plane.strides}")


def _checked(code: int) -> None:
    if code == -1:
        raise MemoryError("the native Chen kernels could not allocate their row buffers")
    if code:
        raise ValueError(f"the native Chen kernels rejected their arguments (code {code})")


def _block_grid(shape) -> Tuple[int, int]:
    return -(-shape[0] // BLOCK), -(-shape[1] // BLOCK)


def contrast_power(image: np.ndarray, narrow_taps: np.ndarray, wide_taps: np.ndarray, ratio: float,
                   out: np.ndarray) -> bool:
    """C' of the (H, W) float64 CSF-filtered ``image`` into ``out`` (H, W); taps: the 31 symmetric
    Gaussian taps of sigma 2 and 4. False (``out`` untouched) without the C kernels."""
    library = _library_or_none()
    if library is None:
        return False
    _check_plane(image, image.shape)
    _check_plane(out, image.shape, writeable=True)
    taps = [np.ascontiguousarray(t, dtype=np.float64) for t in (narrow_taps, wide_taps)]
    if any(t.shape != (31,) or not np.array_equal(t, t[::-1]) for t in taps):
        raise ValueError("the Gaussians must have 31 symmetric taps")
    _checked(library.contrast_power(image.ctypes.data, image.shape[0], image.shape[1], image.strides[0] // 8,
                                    taps[0].ctypes.data, taps[1].ctypes.data, ratio, out.ctypes.data,
                                    out.strides[0] // 8))
    return True


def chen_blum_sum(c1: np.ndarray, c2: np.ndarray, cf: np.ndarray) -> Optional[Tuple[float, bool]]:
    """(sum of Qcb's per-pixel Q, whether some C' is 0) of three (H, W) float64 planes of one row
    stride; None without the C kernels."""
    library = _library_or_none()
    if library is None:
        return None
    for plane in (c1, c2, cf):
        _check_plane(plane, c1.shape)
        if plane.strides != c1.strides:
            raise ValueError("the three C' planes must share one row stride")
    total, zero = ctypes.c_double(), ctypes.c_int()
    _checked(library.chen_blum_sum(c1.ctypes.data, c2.ctypes.data, cf.ctypes.data, c1.shape[0], c1.shape[1],
                                   c1.strides[0] // 8, ctypes.byref(total), ctypes.byref(zero)))
    return total.value, bool(zero.value)


def block_square_sums(plane: np.ndarray) -> Optional[np.ndarray]:
    """The (ceil(H / 16), ceil(W / 16)) block sums of plane^2 ((H, W) float64); None without the C kernels."""
    library = _library_or_none()
    if library is None:
        return None
    _check_plane(plane, plane.shape)
    sums = np.empty(_block_grid(plane.shape))
    _checked(library.block_square_sums(plane.ctypes.data, plane.shape[0], plane.shape[1], plane.strides[0] // 8,
                                       sums.ctypes.data))
    return sums


def saliency_sums(image: np.ndarray) -> Optional[np.ndarray]:
    """The (ceil(H / 16), ceil(W / 16)) block sums of g^5, g the zero-padded 3x3 Sobel magnitude of
    the (H, W) uint8 ``image``; None without the C kernels."""
    library = _library_or_none()
    if library is None:
        return None
    _check_plane(image, image.shape, dtype=np.uint8)
    sums = np.empty(_block_grid(image.shape))
    _checked(library.saliency_sums(image.ctypes.data, image.shape[0], image.shape[1], image.strides[0],
                                   sums.ctypes.data))
    return sums


def difference_product(a: np.ndarray, f: np.ndarray, response: np.ndarray, out: np.ndarray) -> bool:
    """out = (a - f) * response, elementwise, of contiguous float64 arrays of one shape (rounded as
    NumPy's two passes are); False (``out`` untouched) without the C kernels."""
    library = _library_or_none()
    if library is None:
        return False
    for plane in (a, f, response, out):
        if plane.dtype != np.float64 or plane.shape != a.shape or not plane.flags.c_contiguous:
            raise ValueError(f"expected C-contiguous float64 {a.shape} arrays, got {plane.dtype} {plane.shape}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    _checked(library.difference_product(a.ctypes.data, f.ctypes.data, response.ctypes.data, out.ctypes.data, a.size))
    return True
