"""The C kernels compiled on first use are package data: an editable install reads each .c from the
source tree, a wheel has it only if pyproject.toml's package-data names it."""
from fnmatch import fnmatch
from pathlib import Path

import pytest

from mmdrfuse.fusion import fast_student
from mmdrfuse.metrics import native_filter
from mmdrfuse.metrics.vifb import chen_native

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.mark.parametrize("folder, module, entry", [
    ("fusion", fast_student, "int student_rows("),
    ("metrics", native_filter, "int local_moments("),
    ("metrics/vifb", chen_native, "int contrast_power("),
])
def test_kernel_source_is_shipped_as_package_data(folder, module, entry):
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]["mmdrfuse"]
    assert any(fnmatch(f"{folder}/{module.KERNEL_FILE}", pattern) for pattern in patterns), patterns
    assert entry in module.kernel_source()
