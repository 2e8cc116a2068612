"""The two MMDRFuse networks, with the released code's module names.

Both take ``torch.cat([ir, vis], dim=1)``: gray images in [0, 1], shape (B, 2, H, W), and
return ``(fused, feature)``: the Tanh output (B, 1, H, W) and the 4-channel post-ReLU map
that feeds the last conv (B, 4, H, W), which is the "feature" tap of digestible distillation.
The state-dict keys (``conv1.1.weight`` ...) equal those of the released ``*.model`` files,
so those load without conversion.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """ReflectionPad2d(1) + 3x3 conv: index 1 is the conv, as in the released keys."""
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3, stride=stride, bias=True))


class Student(nn.Module):
    """113 parameters: conv(2->4)+ReLU, conv(4->1)+Tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_block(2, 4)
        self.conv2 = conv_block(4, 1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        feature = F.relu(self.conv1(x))
        return torch.tanh(self.conv2(feature)), feature


class Teacher(nn.Module):
    """Dense encoder with one stride-2 stage and a skip-connected decoder (about 0.56 M parameters).

    Odd heights or widths are reflect-padded to even and cropped back: the released code
    crashes on them because the stride-2 and the 2x upsampling sizes disagree.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_block(2, 32)
        self.conv2 = conv_block(32, 32)
        self.conv3 = conv_block(64, 64, stride=2)
        self.conv4 = conv_block(64, 64)
        self.conv5 = conv_block(128, 64)
        self.conv6 = conv_block(192, 64)
        self.conv66 = conv_block(64, 64)
        self.conv55 = conv_block(128, 64)
        self.conv44 = conv_block(128, 64)
        self.conv33 = conv_block(128, 64)
        self.conv22 = conv_block(96, 32)
        self.conv11 = conv_block(64, 4)
        self.conv00 = conv_block(4, 1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        height, width = x.shape[-2:]
        pad_h, pad_w = height % 2, width % 2
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        relu = F.relu
        c1 = relu(self.conv1(x))
        c2 = relu(self.conv2(c1))
        c3 = relu(self.conv3(torch.cat([c1, c2], 1)))
        c4 = relu(self.conv4(c3))
        c5 = relu(self.conv5(torch.cat([c3, c4], 1)))
        c6 = relu(self.conv6(torch.cat([c3, c4, c5], 1)))
        d6 = relu(self.conv66(c6))
        d5 = relu(self.conv55(torch.cat([c5, d6], 1)))
        d4 = relu(self.conv44(torch.cat([c4, d5], 1)))
        d3 = relu(self.conv33(torch.cat([c3, d4], 1)))
        up = F.interpolate(d3, scale_factor=2, mode="bicubic", align_corners=False)
        d2 = relu(self.conv22(torch.cat([c2, up], 1)))
        feature = relu(self.conv11(torch.cat([c1, d2], 1)))
        fused = torch.tanh(self.conv00(feature))
        if pad_h or pad_w:
            fused, feature = fused[..., :height, :width], feature[..., :height, :width]
        return fused, feature


MODELS = {"student": Student, "teacher": Teacher}


def build_model(name: str) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]()


def count_parameters(model: nn.Module) -> int:
    """All parameters, frozen or not (a loaded model is frozen; the student has 113)."""
    return sum(p.numel() for p in model.parameters())


def _file_kind(path: Path) -> str:
    """What a file that torch cannot read looks like, for the error message."""
    head = path.read_bytes()[:512]
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive that is not a PyTorch checkpoint (or a damaged one)"
    if head[:1] == b"\x80":
        return "a pickle that is not a PyTorch state dict (or a truncated one)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"a binary file starting with {head[:8]!r}"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"a text file (starting {first!r})"


EXPECTED = "a PyTorch state dict (the authors' student.model / teacher.model, or a .pth from 'mmdrfuse train')"


def load_state_dict_file(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Read a released ``*.model`` file or a project checkpoint as a plain state dict.

    Accepts a bare state dict, or a dict holding one under ``state_dict`` / ``model``;
    a ``module.`` prefix left by DataParallel is stripped. A file torch cannot read, or one
    holding NaN or infinite values, is a ValueError that says what the file is and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torch's reasons ("101", "") say nothing; say what the file is
        raise ValueError(f"cannot read weights file {path}: it is {_file_kind(path)}, expected {EXPECTED}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights file {path} holds a {type(obj).__name__} that is not a state dict; expected {EXPECTED}")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"weights file {path} holds NaN or infinite values (in {', '.join(bad[:3])}); "
                         f"it cannot produce an image (a diverged training?)")
    return state


def load_model(name: str, weights: Union[str, Path]) -> nn.Module:
    """Build ``name`` and load ``weights``; key or shape mismatches are one line naming the file
    and, when the file fits the other network, which one it is."""
    model = build_model(name)
    state = load_state_dict_file(weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        for other in MODELS:
            if other != name and _fits(other, state):
                raise ValueError(f"{weights} holds {other} weights, not {name} weights "
                                 f"(pass --model {other}, or the {name}'s file)") from None
        expected = build_model(name).state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        shapes = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
        details = "; ".join(part for part in (
            f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "") if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else "") if unexpected else "",
            f"other shapes for {', '.join(sorted(shapes)[:3])}" if shapes else "",
        ) if part)
        raise ValueError(f"{weights} is not a {name} state dict ({details})") from None
    return model


def _fits(name: str, state: Dict[str, torch.Tensor]) -> bool:
    expected = build_model(name).state_dict()
    return set(expected) == set(state) and all(expected[k].shape == state[k].shape for k in expected)
