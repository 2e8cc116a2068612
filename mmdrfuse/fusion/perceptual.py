"""Frozen VGG-19 feature taps for the perception and refresh losses.

.. math::
    \\phi(x) = (\\phi_1, \\dots, \\phi_5)(x) = \\text{VGG-19 activations after relu1_2, relu2_2, relu3_4, relu4_4, relu5_4}

i.e. the outputs of ``features[:4]``, ``[:9]``, ``[:18]``, ``[:27]``, ``[:36]``, all taken from
ONE forward pass (the released code runs five prefix passes that compute the same numbers).
The gray input is repeated to 3 channels and fed in [0, 1] with no ImageNet normalisation,
as in the released code. Only ``features[:36]`` is kept (nothing after relu5_4 is used).

Weights are never downloaded: the ImageNet file is read from torchvision's usual cache
(``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``) or from an explicit path.
``vgg19-random`` is an offline stand-in for tests and smoke runs: a fixed-seed random VGG-19
with Kaiming-normal ``fan_in`` convs and zero biases. torchvision's own init (``fan_out``)
shrinks the activations about 4x from relu1_2 to relu5_4 on [0, 1] inputs (mean 0.09 -> 0.02),
so the deep taps would barely count; ``fan_in`` keeps every tap at a similar scale (0.3-0.5).
"""
from __future__ import annotations

import contextlib
import copy
import functools
from pathlib import Path
from typing import List, Optional, Union

import torch
from torch import nn

TAP_LAYERS = (3, 8, 17, 26, 35)  # indices of relu1_2, relu2_2, relu3_4, relu4_4, relu5_4 in vgg19().features
VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
BACKBONES = ("vgg19", "vgg19-random")


def default_vgg19_path() -> Path:
    """Where torchvision keeps the ImageNet VGG-19 weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


class VGG19Taps(nn.Module):
    """VGG-19 ``features[:36]``, frozen, returning the activations at :data:`TAP_LAYERS`.

    Args:
        features: the ``features`` Sequential of a torchvision VGG-19 (only ``[:36]`` is kept).
        description: what the weights are, for logs and checkpoint metadata.
    """

    def __init__(self, features: nn.Sequential, description: str) -> None:
        super().__init__()
        self.features = features[: TAP_LAYERS[-1] + 1]
        self.description = description
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Taps:
        # Always eval: a frozen backbone must not change behaviour with the trainee's mode.
        return super().train(False)

    def forward(self, gray: torch.Tensor, taps: int = len(TAP_LAYERS)) -> List[torch.Tensor]:
        """(B, 1, H, W) in [0, 1] -> list of the first ``taps`` tap activations (B, D_i, H_i, W_i).

        Stops after the last requested tap, so ``taps=3`` runs only ``features[:18]``.
        """
        if gray.ndim != 4 or gray.shape[1] != 1:
            raise ValueError(f"VGG19Taps expects (B, 1, H, W) gray images, got {tuple(gray.shape)}")
        if not 1 <= taps <= len(TAP_LAYERS):
            raise ValueError(f"taps must be in 1..{len(TAP_LAYERS)}, got {taps}")
        last = TAP_LAYERS[taps - 1]
        x = gray.expand(-1, 3, -1, -1)
        outputs = []
        for index, layer in enumerate(self.features[: last + 1]):
            # torchvision's ReLUs are in place; every tap is followed by a MaxPool (not in place),
            # so a tapped tensor is never overwritten afterwards.
            x = layer(x)
            if index in TAP_LAYERS:
                outputs.append(x)
        return outputs


@contextlib.contextmanager
def exact_fp32(device_type: str):
    """Run the block in plain fp32: autocast off and, on CUDA, no TF32 in convolutions and matmuls.

    For quantities that are small differences of large ones (the refresh losses compare taps of an
    output with those of a nearly identical bank image): bf16 keeps 8 mantissa bits and TF32 10,
    so a 1e-2 pixel difference is of the order of their rounding.
    """
    # The legacy flags: reading them fails once the newer per-operator API (PyTorch >= 2.9) has
    # been used with mixed values, while setting them keeps both APIs consistent.
    backends = torch.backends
    saved = backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32
    backends.cudnn.allow_tf32 = backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = saved


def _vgg19_features() -> nn.Sequential:
    """torchvision's VGG-19 ``features`` alone: building ``vgg19()`` would also initialise the
    120 M-parameter classifier, seconds of CPU for layers never used here."""
    from torchvision.models.vgg import cfgs, make_layers

    return make_layers(cfgs["E"], batch_norm=False)


def random_vgg19_features(seed: int = 0) -> nn.Sequential:
    """A fixed-seed random VGG-19 ``features`` (Kaiming-normal fan_in convs, zero biases)."""
    # Drawing 20 M weights takes seconds on a small CPU; the teacher and the student runs of one
    # process (pipeline, tests) reuse them through a copy.
    return copy.deepcopy(_random_vgg19_features(seed))


@functools.lru_cache(maxsize=2)
def _random_vgg19_features(seed: int) -> nn.Sequential:
    features = _vgg19_features()
    generator = torch.Generator().manual_seed(seed)
    for module in features:
        if isinstance(module, nn.Conv2d):
            fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                module.bias.zero_()
    return features


def imagenet_vgg19_features(path: Optional[Union[str, Path]] = None) -> nn.Sequential:
    """VGG-19 ``features`` with the ImageNet weights read from ``path`` (default: torchvision's cache)."""
    path = Path(path) if path else default_vgg19_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"ImageNet VGG-19 weights not found at {path}. Download {VGG19_URL} and save it as "
            f"{default_vgg19_path()} (or pass --vgg-weights FILE), or choose --perceptual vgg19-random "
            "for an offline run with a fixed-seed random VGG-19 (not the paper's recipe)."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"cannot read VGG-19 weights {path}: {error}") from error
    features = _vgg19_features()
    features_state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    try:
        features.load_state_dict(features_state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path} is not a torchvision VGG-19 state dict: {error}") from error
    return features


def build_perceptual(backbone: str = "vgg19", *, weights: Optional[Union[str, Path]] = None, seed: int = 0) -> VGG19Taps:
    """The frozen perceptual network named by ``backbone`` (see :data:`BACKBONES`)."""
    if backbone == "vgg19":
        path = Path(weights) if weights else default_vgg19_path()
        return VGG19Taps(imagenet_vgg19_features(path), f"vgg19 ImageNet weights from {path}")
    if backbone == "vgg19-random":
        return VGG19Taps(random_vgg19_features(seed), f"vgg19-random (seed {seed}, Kaiming fan_in; not ImageNet)")
    raise ValueError(f"perceptual backbone must be one of {BACKBONES}, got {backbone!r}")

