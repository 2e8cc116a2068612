"""float64 'valid' filtering with a symmetric separable kernel, in C (see :mod:`mmdrfuse.native`).

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
import threading
from typing import Optional, Sequence

import numpy as np

from mmdrfuse import native

SOURCE = r"""
#include <stddef.h>
#include <stdlib.h>

/* Horizontal pass of one row t (W values) into h (W - 2R values). Always inlined, so each
   caller's constant R unrolls the taps. */
static inline __attribute__((always_inline)) void horizontal_pass(const double *restrict t, int W,
        const double *restrict k, const int R, double *restrict h) {
    for (int x = 0; x < W - 2 * R; x++) {
        double acc = k[R] * t[x + R];
#pragma GCC unroll 16
        for (int i = 0; i < R; i++) acc += k[i] * (t[x + i] + t[x + 2 * R - i]);
        h[x] = acc;
    }
}

/* The horizontal pass into o, or every col_step-th value of it through the scratch row t2
   (one function with the subsampling in its loop ran scalar: GCC vectorised only one copy). */
static inline __attribute__((always_inline)) void horizontal(const double *restrict t, int W,
        const double *restrict k, const int R, double *restrict o, int col_step, double *restrict t2) {
    if (col_step == 1) {
        horizontal_pass(t, W, k, R, o);
        return;
    }
    horizontal_pass(t, W, k, R, t2);
    for (int x = 0, j = 0; x < W - 2 * R; x += col_step, j++) o[j] = t2[x];
}

/* One output row of the planes a and, with SQUARE, a*a from the input rows y..y+2R (s: row
   stride in doubles): one vertical pass loads each input value once for both planes, into the
   rows mean and square, then one horizontal pass per plane. */
#define DEFINE_ROW(NAME, RADIUS, SQUARE)                                                          \
static void NAME(const double *restrict a, ptrdiff_t s, int W, const double *restrict k,         \
                 int radius_arg, double *restrict mean, double *restrict square,                  \
                 double *const *o, int col_step, double *restrict t2) {                           \
    const int R = RADIUS;                                                                         \
    (void)radius_arg;                                                                             \
    for (int x = 0; x < W; x++) {                                                                 \
        const double centre = a[R * s + x];                                                       \
        double m = k[R] * centre, q = SQUARE ? k[R] * (centre * centre) : 0.0;                    \
        _Pragma("GCC unroll 16")                                                                  \
        for (int i = 0; i < R; i++) {                                                             \
            const double u = a[i * s + x], v = a[(2 * R - i) * s + x];                            \
            m += k[i] * (u + v);                                                                  \
            if (SQUARE) q += k[i] * (u * u + v * v);                                              \
        }                                                                                         \
        mean[x] = m;                                                                              \
        if (SQUARE) square[x] = q;                                                                \
    }                                                                                             \
    horizontal(mean, W, k, R, o[0], col_step, t2);                                                \
    if (SQUARE) horizontal(square, W, k, R, o[1], col_step, t2);                                  \
}

#define DEFINE_RADIUS(RADIUS, SUFFIX)                                                             \
    DEFINE_ROW(mean_##SUFFIX, RADIUS, 0)                                                          \
    DEFINE_ROW(square_##SUFFIX, RADIUS, 1)

DEFINE_RADIUS(1, r1)
DEFINE_RADIUS(2, r2)
DEFINE_RADIUS(3, r3)
DEFINE_RADIUS(4, r4)
DEFINE_RADIUS(5, r5)
DEFINE_RADIUS(6, r6)
DEFINE_RADIUS(7, r7)
DEFINE_RADIUS(8, r8)
DEFINE_RADIUS(radius_arg, any)

typedef void (*row_function)(const double *, ptrdiff_t, int, const double *, int, double *, double *,
                             double *const *, int, double *);

/* Local moments of H x W planes a and b (row stride in_stride, in doubles) under the
   symmetric kernel of 2 radius + 1 taps: planes = 1 gives the mean of a, 2 adds the mean of
   a*a, 3 adds the mean of a*b (b is read only then). Output p gets the rows 0, step, ... and
   columns 0, step, ... of the 'valid' filter ((H - 2 radius) x (W - 2 radius)) at
   outputs[p], row stride out_stride. Returns 0, -1 when out of memory, -2 on bad arguments.
   a*b is formed once into a buffer (formed on the fly, the vertical pass needs 2 (2 radius + 1)
   row pointers, more than x86 has registers, and ran 3x slower). */
int local_moments(const double *a, const double *b, int H, int W, ptrdiff_t in_stride, int planes,
                  const double *kernel, int radius, int step, double *const *outputs,
                  ptrdiff_t out_stride) {
    static const row_function by_radius[2][9] = {
        {mean_any, mean_r1, mean_r2, mean_r3, mean_r4, mean_r5, mean_r6, mean_r7, mean_r8},
        {square_any, square_r1, square_r2, square_r3, square_r4, square_r5, square_r6, square_r7, square_r8},
    };
    if (planes < 1 || planes > 3 || step < 1 || (planes == 3 && !b)) return -2;
    const int index = radius <= 8 ? radius : 0;
    const row_function row = by_radius[planes > 1][index], mean_row = by_radius[0][index];
    /* three rows (the vertical pass of a, of a*a, the subsampling scratch), then a*b */
    double *buffer = (double *)malloc(sizeof(double) * (size_t)W * (3 + (planes == 3 ? (size_t)H : 0)));
    if (!buffer) return -1;
    double *product = buffer + 3 * (size_t)W;
    if (planes == 3)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                product[(size_t)y * W + x] = a[(size_t)y * in_stride + x] * b[(size_t)y * in_stride + x];
    for (int y = 0, j = 0; y < H - 2 * radius; y += step, j++) {
        double *row_outputs[3];
        for (int p = 0; p < planes; p++) row_outputs[p] = outputs[p] + (size_t)j * out_stride;
        row(a + (size_t)y * in_stride, in_stride, W, kernel, radius, buffer, buffer + W, row_outputs, step,
            buffer + 2 * W);
        if (planes == 3)
            mean_row(product + (size_t)y * W, W, W, kernel, radius, buffer, NULL, row_outputs + 2, step,
                     buffer + 2 * W);
    }
    free(buffer);
    return 0;
}
"""

_build_lock = threading.Lock()
_library: dict = {}


def _function():
    """The C ``local_moments``, or None when it cannot be built (remembered: no retry per call)."""
    with _build_lock:
        if "function" not in _library:
            try:
                library = native.build_library("symmetric_filter", SOURCE, native.find_compiler())
            except RuntimeError:
                _library["function"] = None
            else:
                function = library.local_moments
                pointer, size = ctypes.c_void_p, ctypes.c_ssize_t
                function.argtypes = [pointer, pointer, ctypes.c_int, ctypes.c_int, size, ctypes.c_int, pointer,
                                     ctypes.c_int, ctypes.c_int, pointer, size]
                function.restype = ctypes.c_int
                _library["function"] = function
        return _library["function"]


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
