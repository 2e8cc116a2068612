"""Fast inference of the 113-parameter student: one fused pass over both convolutions.

The student is ``tanh(conv2(pad(relu(conv1(pad(x))))))`` with ``x = cat(ir, vi) / 255``,
3x3 kernels and ``nn.ReflectionPad2d(1)`` (index -1 -> 1, H -> H - 2). Per pixel that is
4 * 18 + 36 = 108 multiply-accumulates, yet the eager PyTorch module spends most of its
time moving 4-channel float maps through memory. Here, per output row ``y``:

    feature[y'] = relu(b1 + sum_{c, dy, dx} (w1 / 255)[k, c, dy, dx] * x_u8[c, r(y' + dy - 1), r(x + dx - 1)])
    out[y]      = tanh(b2 + sum_{k, dy, dx} w2[k, dy, dx] * feature[k, r(y + dy - 1), r(x + dx - 1)])

with ``r`` the reflection, and the input rows and feature rows held in 3-row rings, so
each frame streams through memory once and the 4-channel feature never leaves the cache.
The 1/255 is folded into ``w1`` so the kernel reads the uint8 images directly.

Backends (``compile_student(student, backend=...)``):

- ``native``: that loop in C (``student_kernel.c``, package data beside this module),
  compiled with the system C compiler on first use and cached per user (``$MMDRFUSE_CACHE``,
  else ``$XDG_CACHE_HOME/mmdrfuse``, else ``~/.cache/mmdrfuse``), called through ctypes
  (which releases the GIL) on row bands, one per core.
- ``torch``: the fallback where no compiler works: channels-last float32 convolutions
  (oneDNN's fast layout for few channels), same maths.
- ``auto`` (default): ``native`` if it builds, else ``torch`` with a warning.

The CUDA paths (float16 and a Triton kernel of the same maths), which only the benchmark
uses, are in :mod:`mmdrfuse.fusion.fast_student_cuda`.
"""
from __future__ import annotations

import ctypes
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Callable, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from mmdrfuse.fusion.networks import Student
from mmdrfuse.native import build_library, find_compiler

BACKENDS = ("auto", "native", "torch")
KERNEL_FILE = "student_kernel.c"  # package data beside this module

_ROWS_PER_BAND_MIN = 64  # below this a thread hand-off costs more than the rows

_compiler = find_compiler  # module attribute, so tests can simulate a missing compiler
_build_lock = threading.Lock()
_native_library: dict = {}


def kernel_source() -> str:
    """The C kernel's text, read from the installed package (``mmdrfuse/fusion/student_kernel.c``)."""
    return resources.files(__package__).joinpath(KERNEL_FILE).read_text(encoding="utf-8")


def load_native_kernel() -> ctypes.CDLL:
    """Build (once per user and machine: :mod:`mmdrfuse.native`) and load the C kernel; RuntimeError if not."""
    with _build_lock:
        if "lib" in _native_library:
            return _native_library["lib"]
        library = build_library("student_kernel", kernel_source(), _compiler())
        pointer = ctypes.c_void_p
        library.student_rows.argtypes = [pointer, pointer, pointer] + [ctypes.c_int] * 4 + [pointer] * 3 + [ctypes.c_float]
        library.student_rows.restype = ctypes.c_int
        _native_library["lib"] = library
        return library


def student_parameters(student: Student) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``(w1 / 255 (72,), b1 (4,), w2 (36,), b2)`` as contiguous float32, the kernel's layout."""
    w1 = student.conv1[1].weight.detach().cpu().double()
    w2 = student.conv2[1].weight.detach().cpu().double()
    if tuple(w1.shape) != (4, 2, 3, 3) or tuple(w2.shape) != (1, 4, 3, 3):
        raise ValueError(f"not a student: conv shapes {tuple(w1.shape)}, {tuple(w2.shape)}")
    return (
        np.ascontiguousarray((w1 / 255.0).float().numpy().ravel()),
        np.ascontiguousarray(student.conv1[1].bias.detach().cpu().float().numpy()),
        np.ascontiguousarray(w2.float().numpy().ravel()),
        float(student.conv2[1].bias.detach().cpu().float()[0]),
    )


def available_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check_frames(ir: np.ndarray, vi: np.ndarray, ndim: int) -> Tuple[np.ndarray, np.ndarray]:
    ir, vi = np.asarray(ir), np.asarray(vi)
    if ir.dtype != np.uint8 or vi.dtype != np.uint8:
        raise ValueError(f"inputs must be uint8, got {ir.dtype} and {vi.dtype}")
    if ir.ndim != ndim or ir.shape != vi.shape:
        expected = "(H, W)" if ndim == 2 else "(N, H, W)"
        raise ValueError(f"inputs must both be {expected} of the same shape, got {ir.shape} and {vi.shape}")
    if ir.shape[-2] < 2 or ir.shape[-1] < 2:
        raise ValueError(f"reflection padding needs H, W >= 2, got {ir.shape[-2:]}")
    return np.ascontiguousarray(ir), np.ascontiguousarray(vi)


class NativeStudent:
    """``(ir, vi) uint8 (H, W) -> float32 (H, W)`` Tanh output, by the C kernel on row bands."""

    backend = "native"

    def __init__(self, student: Student, threads: Optional[int] = None) -> None:
        self._kernel = load_native_kernel().student_rows
        self._w1, self._b1, self._w2, self._b2 = student_parameters(student)
        self.threads = max(1, threads or available_cores())
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="mmdrfuse-student") if self.threads > 1 else None

    def _bands(self, height: int):
        count = max(1, min(self.threads, height // _ROWS_PER_BAND_MIN))
        edges = np.linspace(0, height, count + 1).astype(int)
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]

    def _submit(self, ir: np.ndarray, vi: np.ndarray, out: np.ndarray):
        height, width = ir.shape
        calls = [
            (ir.ctypes.data, vi.ctypes.data, out.ctypes.data, height, width, y0, y1,
             self._w1.ctypes.data, self._b1.ctypes.data, self._w2.ctypes.data, self._b2)
            for y0, y1 in self._bands(height)
        ]
        if self._pool is None:
            return [self._kernel(*call) for call in calls]
        return [self._pool.submit(self._kernel, *call) for call in calls]

    def _finish(self, pending) -> None:
        codes = [p if isinstance(p, int) else p.result() for p in pending]
        if any(codes):
            raise MemoryError("native student kernel could not allocate its row buffers")

    def __call__(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        ir, vi = _check_frames(ir, vi, 2)
        out = np.empty(ir.shape, np.float32)
        self._finish(self._submit(ir, vi, out))
        return out

    def batch(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        """(N, H, W) uint8 pairs -> (N, H, W) float32."""
        ir, vi = _check_frames(ir, vi, 3)
        out = np.empty(ir.shape, np.float32)
        pending = []
        for index in range(ir.shape[0]):
            pending += self._submit(ir[index], vi[index], out[index])
        self._finish(pending)
        return out


class TorchStudent:
    """The same callable with channels-last float32 torch convolutions (no compiler needed)."""

    backend = "torch"

    def __init__(self, student: Student) -> None:
        w1, b1, w2, b2 = student_parameters(student)
        self._w1 = torch.from_numpy(w1).view(4, 2, 3, 3).contiguous(memory_format=torch.channels_last)
        self._b1 = torch.from_numpy(b1)
        self._w2 = torch.from_numpy(w2).view(1, 4, 3, 3).contiguous(memory_format=torch.channels_last)
        self._b2 = torch.tensor([b2], dtype=torch.float32)

    def _forward(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        # numpy's "reflect" is ReflectionPad2d's, and much faster than torch's on channels-last
        # maps; (N, H, W, C) arrays seen as (N, C, H, W) are channels-last. The 1/255 is in w1.
        pad = ((0, 0), (1, 1), (1, 1), (0, 0))
        x = torch.from_numpy(np.pad(np.stack([ir, vi], axis=-1), pad, mode="reflect")).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            feature = F.relu_(F.conv2d(x, self._w1, self._b1)).permute(0, 2, 3, 1).numpy()
            feature = torch.from_numpy(np.pad(feature, pad, mode="reflect")).permute(0, 3, 1, 2)
            fused = torch.tanh_(F.conv2d(feature, self._w2, self._b2))
        return np.ascontiguousarray(fused[:, 0].numpy())

    def __call__(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        ir, vi = _check_frames(ir, vi, 2)
        return self._forward(ir[None], vi[None])[0]

    def batch(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        """(N, H, W) uint8 pairs -> (N, H, W) float32."""
        ir, vi = _check_frames(ir, vi, 3)
        return self._forward(ir, vi)


def compile_student(student: Student, *, backend: str = "auto", threads: Optional[int] = None) -> Callable:
    """A fast ``(ir, vi) -> fused`` for ``student`` on the CPU.

    ``ir``, ``vi``: uint8 (H, W) with H, W >= 2; returns float32 (H, W), the raw Tanh output
    ``student(cat([ir, vi])[None] / 255)[0]``. The callable also has ``.batch(ir, vi)`` for
    (N, H, W) stacks and ``.backend`` (``"native"`` or ``"torch"``). The weights are copied:
    later changes to ``student`` do not reach the compiled callable.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return TorchStudent(student)
    try:
        return NativeStudent(student, threads)
    except RuntimeError as error:
        if backend == "native":
            raise
        warnings.warn(f"fast student falls back to torch: {error}", RuntimeWarning, stacklevel=2)
        return TorchStudent(student)
