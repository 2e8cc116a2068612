"""The fast student (native C kernel and torch fallback) against the eager nn.Module."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path

from mmdrfuse import native
from mmdrfuse.data.io import match_pairs, read_gray
from mmdrfuse.fusion import fast_student
from mmdrfuse.fusion.fast_student import compile_student
from mmdrfuse.fusion.networks import Student, load_model
from mmdrfuse.fusion.scaling import to_uint8
from mmdrfuse.native import find_compiler

SIZES = [(2, 2), (3, 5), (5, 3), (2, 9), (301, 496)]


def eager(student, ir, vi):
    x = torch.from_numpy(np.stack([ir, vi])[None]).float() / 255
    with torch.no_grad():
        return student(x)[0][0, 0].numpy()


def random_student(seed, gain=1.0):
    """Random weights; a large ``gain`` drives both ReLU and Tanh into their flat parts."""
    torch.manual_seed(seed)
    student = Student().eval()
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.mul_(gain)
    return student


def random_pair(height, width, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width), dtype=np.uint8), rng.integers(0, 256, (height, width), dtype=np.uint8)


def assert_same_images(fast, reference):
    assert fast.dtype == np.float32 and fast.shape == reference.shape
    np.testing.assert_allclose(fast, reference, atol=1e-5, rtol=0)  # float32 summation order
    for scaling in ("minmax", "clip"):
        levels = np.abs(to_uint8(fast, scaling).astype(int) - to_uint8(reference, scaling).astype(int))
        assert levels.max() <= 1, scaling


# The native kernel needs a C compiler and may be switched off; tests that ask for it by name
# skip then (the fallback tests below run everywhere).
NATIVE_AVAILABLE = not os.environ.get("MMDRFUSE_NO_NATIVE") and find_compiler() is not None
needs_native = pytest.mark.skipif(not NATIVE_AVAILABLE, reason="no C compiler, or MMDRFUSE_NO_NATIVE is set")


@pytest.fixture(params=[pytest.param("native", marks=needs_native), "torch"])
def backend(request):
    return request.param


@pytest.mark.parametrize("height,width", SIZES)
@pytest.mark.parametrize("gain", [1.0, 8.0])
def test_matches_eager_including_reflected_borders(backend, height, width, gain):
    student = random_student(seed=height * 1000 + width, gain=gain)
    ir, vi = random_pair(height, width, seed=width)
    fast = compile_student(student, backend=backend)
    assert fast.backend == backend
    assert_same_images(fast(ir, vi), eager(student, ir, vi))


@needs_native
def test_row_bands_join_without_seams():
    student = random_student(seed=3)
    ir, vi = random_pair(301, 130, seed=3)
    one = compile_student(student, backend="native", threads=1)(ir, vi)
    banded = compile_student(student, backend="native", threads=4)
    assert len(banded._bands(301)) == 4
    np.testing.assert_array_equal(banded(ir, vi), one)


def test_batch_equals_frame_by_frame(backend):
    student = random_student(seed=5)
    pairs = [random_pair(67, 40, seed=s) for s in range(3)]
    ir, vi = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    fast = compile_student(student, backend=backend)
    batched = fast.batch(ir, vi)
    for index, (one_ir, one_vi) in enumerate(pairs):
        np.testing.assert_allclose(batched[index], eager(student, one_ir, one_vi), atol=2e-6, rtol=0)


def test_non_contiguous_input_is_read_correctly(backend):
    student = random_student(seed=6)
    ir, vi = random_pair(40, 60, seed=6)
    fast = compile_student(student, backend=backend)
    np.testing.assert_allclose(fast(ir[:, ::2], vi[:, ::2]), eager(student, ir[:, ::2].copy(), vi[:, ::2].copy()), atol=2e-6)


@pytest.mark.parametrize(
    "ir,vi",
    [
        (np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8)),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8)),
        (np.zeros((1, 8), np.uint8), np.zeros((1, 8), np.uint8)),
        (np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.uint8)),
    ],
)
def test_bad_input_is_rejected(backend, ir, vi):
    with pytest.raises(ValueError):
        compile_student(Student(), backend=backend)(ir, vi)


@needs_native
def test_weights_are_copied_at_compile_time():
    student = random_student(seed=7)
    ir, vi = random_pair(9, 9, seed=7)
    fast = compile_student(student, backend="native")
    before = fast(ir, vi)
    with torch.no_grad():
        student.conv2[1].bias.add_(1.0)
    np.testing.assert_array_equal(fast(ir, vi), before)


def test_falls_back_to_torch_without_a_compiler(monkeypatch, tmp_path):
    monkeypatch.delenv("MMDRFUSE_NO_NATIVE", raising=False)
    monkeypatch.setattr(fast_student, "_native_library", {})
    monkeypatch.setattr(fast_student, "_compiler", lambda: None)
    monkeypatch.setenv("MMDRFUSE_CACHE", str(tmp_path))
    student = random_student(seed=8)
    with pytest.warns(RuntimeWarning, match="falls back to torch"):
        fast = compile_student(student)
    assert fast.backend == "torch"
    ir, vi = random_pair(33, 17, seed=8)
    assert_same_images(fast(ir, vi), eager(student, ir, vi))
    with pytest.raises(RuntimeError, match="no C compiler"):
        compile_student(student, backend="native")


@pytest.mark.parametrize("breakage", ["failing compiler", "cache path is a file"])
def test_falls_back_to_torch_when_the_build_fails(monkeypatch, tmp_path, breakage):
    monkeypatch.setattr(fast_student, "_native_library", {})
    if breakage == "failing compiler":
        monkeypatch.setattr(fast_student, "_compiler", lambda: "false")
        monkeypatch.setenv("MMDRFUSE_CACHE", str(tmp_path))
    else:
        (tmp_path / "not-a-folder").write_text("")
        monkeypatch.setenv("MMDRFUSE_CACHE", str(tmp_path / "not-a-folder"))
    with pytest.warns(RuntimeWarning, match="falls back to torch"):
        fast = compile_student(random_student(seed=10))
    assert fast.backend == "torch"


@needs_native
def test_kernel_builds_into_an_empty_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(fast_student, "_native_library", {})
    monkeypatch.setenv("MMDRFUSE_CACHE", str(tmp_path / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a silent fallback would hide a broken build
        fast = compile_student(random_student(seed=9))
    assert fast.backend == "native"
    built = list((tmp_path / "cache").iterdir())
    assert len(built) == 1 and built[0].name.startswith("student_kernel-") and built[0].suffix == ".so"


def test_released_weights_on_roadscene_odd_size(official_weights, backend):
    student = load_model("student", official_weights["student"]).eval()
    pairs, _ = match_pairs(shared_path("datasets", "RoadScene", "ir"), shared_path("datasets", "RoadScene", "vi"))
    _, ir_path, vi_path = pairs[0]
    ir, vi = read_gray(ir_path), read_gray(vi_path)
    assert ir.shape[0] % 2 == 1 or ir.shape[1] % 2 == 1  # RoadScene has odd sizes: that is the point
    assert_same_images(compile_student(student, backend=backend)(ir, vi), eager(student, ir, vi))


@needs_native
def test_an_edited_kernel_is_rebuilt_not_loaded_stale(monkeypatch, tmp_path):
    """The cache key covers the C text: a changed kernel gets its own library, and that one is loaded."""
    monkeypatch.setenv("MMDRFUSE_CACHE", str(tmp_path))
    student = random_student(seed=11)
    ir, vi = random_pair(20, 30, seed=11)
    monkeypatch.setattr(fast_student, "_native_library", {})
    original = compile_student(student, backend="native")(ir, vi)
    source = fast_student.kernel_source()
    assert "dst[x] = rational_tanh(a);" in source
    edited = source.replace("dst[x] = rational_tanh(a);", "dst[x] = -rational_tanh(a);")
    monkeypatch.setattr(fast_student, "kernel_source", lambda: edited)
    monkeypatch.setattr(fast_student, "_native_library", {})
    np.testing.assert_array_equal(compile_student(student, backend="native")(ir, vi), -original)
    assert len(list(tmp_path.glob("student_kernel-*.so"))) == 2


TRITON_BLOCKED = """
import sys
sys.modules["triton"] = None  # from here on, import triton raises ImportError
import numpy as np
from mmdrfuse.fusion.fast_student import compile_student
from mmdrfuse.fusion.networks import Student
fast = compile_student(Student(), backend="torch")
print(fast(np.zeros((4, 5), np.uint8), np.zeros((4, 5), np.uint8)).shape)
print("fast_student_cuda" in " ".join(sys.modules))
"""


def test_cpu_fast_student_imports_and_runs_without_triton():
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                                os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", TRITON_BLOCKED], env=environment, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["(4,", "5)", "False"]


def test_cpu_description_names_the_model_and_keys_on_the_flags(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    block = "processor\t: {}\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core Processor\nflags\t\t: fpu sse2 avx2\n\n"
    cpuinfo.write_text(block.format(0) + block.format(1))
    monkeypatch.setattr(native, "CPUINFO", str(cpuinfo))
    assert native.cpu_description() == "AMD EPYC 7B13 64-Core Processor"
    key = native.cpu_description(flags=True)
    assert key.count("model name") == 1 and key.count("avx2") == 1  # one line per distinct value, not per core
    cpuinfo.write_text(block.format(0).replace("avx2", "avx512f"))
    assert native.cpu_description(flags=True) != key  # other instructions: other -march=native libraries
    assert native.cpu_description() == "AMD EPYC 7B13 64-Core Processor"
    monkeypatch.setattr(native, "CPUINFO", str(tmp_path / "missing"))
    assert native.cpu_description() and native.cpu_description(flags=True)  # e.g. macOS: platform's answer
