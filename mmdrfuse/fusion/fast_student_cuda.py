"""Fast student on CUDA, for the benchmark: float16 module or one fused Triton kernel.

The maths is :mod:`mmdrfuse.fusion.fast_student`'s (conv1 + ReLU + conv2 + Tanh with
reflection padding, the 1/255 folded into ``w1``), on uint8 frames already on the GPU:

- ``half``: the ``Student`` module in float16 (NCHW, or channels-last if asked).
- ``triton``: one kernel per frame batch, each program a 16x64 output tile whose 3x3
  feature neighbourhood is recomputed from the uint8 inputs, so the 4-channel feature stays
  in registers; float32 arithmetic.

On an H100 the Triton kernel matched eager float32 to 1e-5 but was no faster than cuDNN
(0.57 ms vs 0.43 to 0.61 ms per 1280x1024 frame): at this size the GPU is bound by
launches, not maths. triton is imported only when a Triton student is built, so this module
imports without it.
"""
from __future__ import annotations

from typing import Callable

import torch

from mmdrfuse.fusion.fast_student import student_parameters
from mmdrfuse.fusion.networks import Student


class HalfStudent:
    """CUDA: ``(ir, vi)`` uint8 tensors (H, W) or (N, H, W) on the GPU -> float32 Tanh output.

    Float16 weights and activations, channels-last or (default) plain NCHW layout; inputs
    are converted on the GPU.
    """

    backend = "cuda-half"

    def __init__(self, student: Student, device: str = "cuda", channels_last: bool = False) -> None:
        self._layout = torch.channels_last if channels_last else torch.contiguous_format
        self._model = Student().to(device).half().to(memory_format=self._layout).eval()
        self._model.load_state_dict(student.state_dict())

    def __call__(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        x = torch.stack([ir, vi], dim=-3)
        x = x[None] if x.dim() == 3 else x
        with torch.inference_mode():
            x = x.half().mul_(1.0 / 255.0).contiguous(memory_format=self._layout)
            fused = self._model(x)[0][:, 0].float()
        return fused[0] if ir.dim() == 2 else fused


def _triton_student():
    """The Triton kernel, built on first use (needs triton and a CUDA device).

    On an H100 this form ran 0.57 ms per 1280x1024 frame (eager float32: 0.43 ms without,
    0.55 to 0.61 ms with TF32), so it is correct but no faster than cuDNN; a variant without
    masks and with unspecialised H, W ran 4.9 ms, so keep the masks and specialisation.
    """
    import triton
    import triton.language as tl

    @triton.jit
    def student_kernel(ir_ptr, vi_ptr, out_ptr, w1_ptr, b1_ptr, w2_ptr, b2, H, W,
                       BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
        # One program: a BLOCK_H x BLOCK_W output tile of frame program_id(2). Each of the 9
        # feature positions an output needs is recomputed from the uint8 inputs (L1-cached):
        # 9x the conv1 arithmetic, but the feature never goes to memory. Reflection is written
        # out (|i|, then 2n - 2 - i past the end): a kernel may call only module-level jit
        # functions, and this module must import without triton.
        rows = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
        cols = tl.program_id(0) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
        inside = (rows < H) & (cols < W)
        frame = tl.program_id(2).to(tl.int64) * H * W
        acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32) + b2
        for fy in tl.static_range(3):
            feature_rows = tl.abs(rows + (fy - 1))
            feature_rows = tl.where(feature_rows >= H, 2 * H - 2 - feature_rows, feature_rows)
            for fx in tl.static_range(3):
                feature_cols = tl.abs(cols + (fx - 1))
                feature_cols = tl.where(feature_cols >= W, 2 * W - 2 - feature_cols, feature_cols)
                f0 = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32) + tl.load(b1_ptr + 0)
                f1 = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32) + tl.load(b1_ptr + 1)
                f2 = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32) + tl.load(b1_ptr + 2)
                f3 = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32) + tl.load(b1_ptr + 3)
                for ey in tl.static_range(3):
                    input_rows = tl.abs(feature_rows + (ey - 1))
                    input_rows = tl.where(input_rows >= H, 2 * H - 2 - input_rows, input_rows)
                    for ex in tl.static_range(3):
                        input_cols = tl.abs(feature_cols + (ex - 1))
                        input_cols = tl.where(input_cols >= W, 2 * W - 2 - input_cols, input_cols)
                        offset = frame + input_rows * W + input_cols
                        a = tl.load(ir_ptr + offset, mask=inside, other=0).to(tl.float32)
                        b = tl.load(vi_ptr + offset, mask=inside, other=0).to(tl.float32)
                        tap = ey * 3 + ex  # w1 layout (out, in, kh, kw), already times 1/255
                        f0 += a * tl.load(w1_ptr + 0 + tap) + b * tl.load(w1_ptr + 9 + tap)
                        f1 += a * tl.load(w1_ptr + 18 + tap) + b * tl.load(w1_ptr + 27 + tap)
                        f2 += a * tl.load(w1_ptr + 36 + tap) + b * tl.load(w1_ptr + 45 + tap)
                        f3 += a * tl.load(w1_ptr + 54 + tap) + b * tl.load(w1_ptr + 63 + tap)
                tap2 = fy * 3 + fx
                acc += tl.maximum(f0, 0.0) * tl.load(w2_ptr + 0 + tap2)
                acc += tl.maximum(f1, 0.0) * tl.load(w2_ptr + 9 + tap2)
                acc += tl.maximum(f2, 0.0) * tl.load(w2_ptr + 18 + tap2)
                acc += tl.maximum(f3, 0.0) * tl.load(w2_ptr + 27 + tap2)
        fused = 2.0 * tl.sigmoid(2.0 * acc) - 1.0  # tanh
        tl.store(out_ptr + frame + rows * W + cols, fused, mask=inside)

    return student_kernel


class TritonStudent:
    """CUDA: the fused loop as one Triton kernel; same call as ``HalfStudent``, float32 maths."""

    backend = "cuda-triton"
    block = (16, 64)

    def __init__(self, student: Student, device: str = "cuda") -> None:
        w1, b1, w2, b2 = student_parameters(student)
        self._kernel = _triton_student()
        self._w1, self._b1, self._w2 = (torch.from_numpy(a).to(device) for a in (w1, b1, w2))
        self._b2 = b2

    def __call__(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        if ir.dtype != torch.uint8 or ir.shape != vi.shape or ir.dim() not in (2, 3) or min(ir.shape[-2:]) < 2:
            raise ValueError("inputs must be uint8 (H, W) or (N, H, W) of one shape with H, W >= 2; "
                             f"got {tuple(ir.shape)} {ir.dtype}, {tuple(vi.shape)} {vi.dtype}")
        ir3, vi3 = (t.contiguous().view(-1, *t.shape[-2:]) for t in (ir, vi))
        frames, height, width = ir3.shape
        out = torch.empty(ir3.shape, dtype=torch.float32, device=ir.device)
        grid = (-(-width // self.block[1]), -(-height // self.block[0]), frames)
        self._kernel[grid](ir3, vi3, out, self._w1, self._b1, self._w2, self._b2, height, width,
                           BLOCK_H=self.block[0], BLOCK_W=self.block[1])
        return out.view(ir.shape)


def compile_student_cuda(student: Student, *, backend: str = "auto", device: str = "cuda") -> Callable:
    """A fast CUDA student: ``backend`` ``triton`` (needs triton), ``half``, or ``auto`` (triton if importable)."""
    if backend not in ("auto", "triton", "half"):
        raise ValueError(f"CUDA backend must be auto, triton or half, got {backend!r}")
    if backend in ("auto", "triton"):
        try:
            return TritonStudent(student, device)
        except ImportError:
            if backend == "triton":
                raise RuntimeError("the triton CUDA backend needs the triton package") from None
    return HalfStudent(student, device)
