"""VGG-19 taps: one pass equals the released code's five prefix passes; weights never downloaded."""
from __future__ import annotations

import pytest
import torch

from mmdrfuse.fusion.losses import perception_loss
from mmdrfuse.fusion.perceptual import (
    TAP_LAYERS,
    VGG19_URL,
    _random_vgg19_features,
    build_perceptual,
    default_vgg19_path,
    exact_fp32,
    random_vgg19_features,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vgg():
    return build_perceptual("vgg19-random", seed=0)


def prefix_taps(features, gray):
    """The released code: features[:4], [:9], [:18], [:27], [:36], each run from the input."""
    x = gray.repeat(1, 3, 1, 1)
    return [features[: index + 1](x.clone()) for index in TAP_LAYERS]


def test_one_pass_loss_equals_five_prefix_passes(vgg):
    torch.manual_seed(0)
    fused, ir, vi = torch.rand(3, 2, 1, 32, 32).unbind(0)
    one_pass = perception_loss(vgg(fused), vgg(ir), vgg(vi))
    prefixes = perception_loss(*(prefix_taps(vgg.features, x) for x in (fused, ir, vi)))
    assert torch.allclose(one_pass, prefixes, rtol=0, atol=1e-6)
    for a, b in zip(vgg(fused), prefix_taps(vgg.features, fused)):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=1e-6)


def test_taps_shapes_and_early_stop(vgg):
    taps = vgg(torch.rand(2, 1, 32, 32))
    assert [t.shape[1] for t in taps] == [64, 128, 256, 512, 512]
    assert [t.shape[-1] for t in taps] == [32, 16, 8, 4, 2]
    assert len(vgg.features) == 36  # nothing after relu5_4
    first_three = vgg(torch.rand(2, 1, 32, 32), taps=3)
    assert len(first_three) == 3


def test_frozen_and_stays_in_eval(vgg):
    vgg.train()
    assert not vgg.training and not any(p.requires_grad for p in vgg.parameters())
    x = torch.rand(1, 1, 16, 16, requires_grad=True)
    vgg(x)[-1].sum().backward()  # gradients reach the input (the fused image), not the backbone
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_random_backbone_is_seeded_and_keeps_every_tap_alive(vgg):
    _random_vgg19_features.cache_clear()  # draw the weights again from the seed
    again = random_vgg19_features(0)
    assert all(torch.equal(a, b) for a, b in zip(vgg.features.state_dict().values(), again.state_dict().values()))
    torch.manual_seed(0)
    means = [t.abs().mean().item() for t in vgg(torch.rand(2, 1, 64, 64))]
    # no vanishing/exploding activations: every tap within a factor ~10 of the first
    assert all(torch.isfinite(torch.tensor(means))) and max(means) / min(means) < 10


def test_missing_imagenet_weights_names_path_and_url(tmp_path):
    missing = tmp_path / "vgg19-dcbb9e9d.pth"
    with pytest.raises(FileNotFoundError) as error:
        build_perceptual("vgg19", weights=missing)
    message = str(error.value)
    assert str(missing) in message and VGG19_URL in message and str(default_vgg19_path()) in message
    assert "vgg19-random" in message


def test_imagenet_loader_reads_a_torchvision_state_dict(tmp_path):
    # a torchvision VGG-19 state dict holds "features.N.*" (and the classifier, ignored here)
    features = random_vgg19_features(3)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    vgg = build_perceptual("vgg19", weights=path)
    assert torch.equal(vgg.features[34].weight, features[34].weight)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth"):
        build_perceptual("vgg19", weights=tmp_path / "bad.pth")


def test_exact_fp32_turns_autocast_and_tf32_off_and_restores_them():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with exact_fp32("cpu"):
            assert not torch.is_autocast_enabled("cpu")
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
            assert torch.nn.functional.conv2d(torch.rand(1, 2, 5, 5), torch.rand(3, 2, 3, 3)).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")
        assert torch.nn.functional.conv2d(torch.rand(1, 2, 5, 5), torch.rand(3, 2, 3, 3)).dtype == torch.bfloat16
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before
