"""SSIM against scikit-image, GMSD's zero and sign."""
import numpy as np
import pytest
import torch

from mmdrfuse.metrics.gmsd import gmsd
from mmdrfuse.metrics.ssim import ssim


def test_ssim_identical_is_one_and_matches_skimage():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.random((40, 50))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    ta, tb = (torch.from_numpy(v)[None, None] for v in (a, b))
    assert torch.allclose(ssim(ta, ta), torch.ones(1, dtype=torch.float64))
    ours = ssim(ta, tb, data_range=2.0, window="uniform", window_size=7, sample_covariance=True).item()
    ref = skimage_metrics.structural_similarity(a, b, data_range=2.0)
    assert ours == pytest.approx(ref, abs=1e-9)


def test_gmsd_zero_for_identical_and_positive_otherwise():
    torch.manual_seed(0)
    a = torch.rand(2, 1, 32, 32)
    assert torch.allclose(gmsd(a, a), torch.zeros(2), atol=1e-6)
    assert (gmsd(a, a.flip(-1)) > 0.01).all()
