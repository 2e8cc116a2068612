"""The C kernels compiled on first use are package data: an editable install reads each .c from the
source tree, a wheel has it only if pyproject.toml's package-data names it."""
from fnmatch import fnmatch
from pathlib import Path

import pytest

from mmdrfuse.fusion import fast_student
from mmdrfuse.metrics import native_filter, native_sums
from mmdrfuse.metrics.vifb import chen_native

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.mark.parametrize("folder, module, entry", [
    ("fusion", fast_student, "int student_rows("),
    ("metrics", native_filter, "int local_moments("),
    ("metrics", native_sums, "int ssim_sums("),
    ("metrics/vifb", chen_native, "int contrast_power("),
])
def test_kernel_source_is_shipped_as_package_data(folder, module, entry):
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]["mmdrfuse"]
    assert any(fnmatch(f"{folder}/{module.KERNEL_FILE}", pattern) for pattern in patterns), patterns
    assert entry in module.kernel_source()


def test_every_file_of_a_weights_shipment_is_package_data():
    # scripts/ship_weights.py writes exactly FILES into mmdrfuse/weights (tests/test_ship_weights.py checks that).
    import importlib.util

    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]["mmdrfuse"]
    spec = importlib.util.spec_from_file_location("ship_weights", PYPROJECT.parent / "scripts" / "ship_weights.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    assert {"student.pth", "teacher.pth", "weights.json"} <= set(ship.FILES)
    missing = [name for name in ship.FILES if not any(fnmatch(f"weights/{name}", pattern) for pattern in patterns)]
    assert not missing, f"not package data: {missing} (patterns {patterns})"
