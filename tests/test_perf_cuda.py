"""CUDA student paths (Triton kernel, float16) against the eager float32 module.

Skipped without a CUDA device (and the Triton cases without triton); the Triton kernel's
logic is also checked in Triton's CPU interpreter wherever triton is installed."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdrfuse.fusion.fast_student_cuda import HalfStudent, compile_student_cuda
from mmdrfuse.fusion.networks import Student
from mmdrfuse.fusion.scaling import to_uint8

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def true_float32():
    """cuDNN convolutions default to TF32 on Ampere and later (about 1e-4 off float32): not for the reference."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = previous


def case(height, width, seed, frames=None, device="cuda"):
    torch.manual_seed(seed)
    student = Student().eval().to(device)
    shape = (height, width) if frames is None else (frames, height, width)
    generator = torch.Generator().manual_seed(seed)
    ir = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator).to(device)
    vi = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator).to(device)
    x = torch.stack([ir, vi], dim=-3).float() / 255
    with torch.no_grad():
        reference = student(x if frames else x[None])[0][:, 0]
    return student, ir, vi, reference if frames else reference[0]


@needs_cuda
@pytest.mark.parametrize("height,width", [(2, 2), (3, 5), (17, 2), (301, 496), (1024, 1280)])
def test_triton_matches_eager(height, width):
    pytest.importorskip("triton")
    student, ir, vi, reference = case(height, width, seed=height + width)
    fast = compile_student_cuda(student, backend="triton")
    fused = fast(ir, vi)
    assert fused.shape == (height, width) and fused.dtype == torch.float32
    assert float((fused - reference).abs().max()) < 1e-5
    for scaling in ("minmax", "clip"):
        levels = to_uint8(fused.cpu().numpy(), scaling).astype(int) - to_uint8(reference.cpu().numpy(), scaling)
        assert np.abs(levels).max() <= 1


@needs_cuda
def test_triton_batch_matches_eager():
    pytest.importorskip("triton")
    student, ir, vi, reference = case(37, 70, seed=1, frames=3)
    fused = compile_student_cuda(student, backend="triton")(ir, vi)
    assert fused.shape == (3, 37, 70)
    assert float((fused - reference).abs().max()) < 1e-5


@needs_cuda
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("height,width", [(3, 5), (301, 496)])
def test_half_is_close_to_eager(height, width, channels_last):
    student, ir, vi, reference = case(height, width, seed=2)
    fused = HalfStudent(student, channels_last=channels_last)(ir, vi)
    assert fused.shape == (height, width)
    assert float((fused - reference).abs().max()) < 5e-3  # float16 activations


INTERPRETER_CHECK = """
import torch
from test_perf_cuda import case
from mmdrfuse.fusion.fast_student_cuda import TritonStudent
for height, width, frames in [(2, 2, None), (3, 5, None), (17, 2, None), (37, 70, 2)]:
    student, ir, vi, reference = case(height, width, seed=width, frames=frames, device="cpu")
    fused = TritonStudent(student, device="cpu")(ir, vi)
    assert fused.shape == reference.shape, (fused.shape, reference.shape)
    difference = float((fused - reference).abs().max())
    assert difference < 1e-5, (height, width, difference)
print("ok")
"""


def test_triton_kernel_logic_in_interpreter():
    """Triton's interpreter runs the kernel on CPU tensors: tile edges, masks, reflection, batch.

    A subprocess, because triton reads TRITON_INTERPRET once, when it is imported."""
    pytest.importorskip("triton")
    environment = dict(os.environ, TRITON_INTERPRET="1")
    environment["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), environment.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", INTERPRETER_CHECK], env=environment, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
