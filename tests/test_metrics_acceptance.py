"""Acceptance: the released student under the paper's protocol reproduces NOTES.md's table (+-0.01)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path

from mmdrfuse.data.io import match_pairs, read_gray
from mmdrfuse.fusion.networks import load_model
from mmdrfuse.fusion.scaling import to_uint8
from mmdrfuse.metrics import PAPER_METRICS, evaluate_pair

# ../shared/reference/NOTES.md, "Numbers: released student weights under this protocol"
EXPECTED = {
    "RoadScene": ("ir", "vi", 50, (47.23, 1.78, 0.67, 0.48, 0.97, 0.59)),
    "MRI_PET": ("PET", "MRI", 42, (71.17, 1.71, 0.61, 0.62, 0.44, 0.81)),
}


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_released_student_reproduces_the_reference_table(dataset, official_weights):
    ir_folder, vi_folder, count, expected = EXPECTED[dataset]
    folder = shared_path("datasets", dataset)
    pairs, _ = match_pairs(folder / ir_folder, folder / vi_folder)
    assert len(pairs) == count
    student = load_model("student", official_weights["student"]).eval()
    scores = []
    for _, ir_path, vi_path in pairs:
        ir, vi = read_gray(ir_path), read_gray(vi_path)
        inputs = torch.from_numpy(np.stack([ir, vi]) / 255.0).float()[None]
        with torch.no_grad():
            fused = student(inputs)[0]
        fused = to_uint8(fused[0, 0].numpy(), "minmax")
        scores.append(evaluate_pair(fused, ir, vi, PAPER_METRICS))
    means = {name: float(np.mean([score[name] for score in scores])) for name in PAPER_METRICS}
    assert means == pytest.approx(dict(zip(PAPER_METRICS, expected)), abs=0.01)
