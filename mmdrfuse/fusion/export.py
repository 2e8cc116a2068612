"""Command ``mmdrfuse export``: a fusion network as ONNX, checked against PyTorch before it is kept.

The graph maps ``images`` (N, 2, H, W) = ``cat(ir, vis)`` in [0, 1] to ``fused`` (N, 1, H, W),
the raw Tanh output, with N, H and W dynamic (odd sizes included, see :func:`export_module`).
It is written under a temporary name, compared with onnxruntime (where installed) at odd and
even sizes, and renamed to the requested file only if the two agree to 1e-4.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

from mmdrfuse.config import add_command


def register(subparsers) -> None:
    """Add ``export`` (options: that section of mmdrfuse/cfg/default.yaml)."""
    add_command(
        subparsers, "export", section="export", handler=run_export,
        help="export a network to ONNX: input 'images' (N, 2, H, W) = cat(ir, vis) in [0, 1], "
        "output 'fused' (N, 1, H, W) raw Tanh; N, H, W dynamic",
    )


def export_module(model):
    """``images (N, 2, H, W) -> fused (N, 1, H, W)``, with odd sizes handled inside the graph.

    The teacher's own odd-size branch is a Python ``if`` that tracing would freeze at the
    example's parity, so here the reflect-pad to even is unconditional (``H % 2`` rows,
    ``W % 2`` columns, traced as shape arithmetic) and the crop back uses the input size:
    the same numbers as ``Teacher.forward`` for every parity.
    """
    import torch
    import torch.nn.functional as F

    from mmdrfuse.fusion.networks import Teacher

    class FusedOutput(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network
            self.pad_to_even = isinstance(network, Teacher)

        def forward(self, images):
            if not self.pad_to_even:
                return self.network(images)[0]
            height, width = images.shape[-2], images.shape[-1]
            padded = F.pad(images, (0, width % 2, 0, height % 2), mode="reflect")
            return self.network(padded)[0][..., :height, :width]

    return FusedOutput(model).eval()


def export_onnx(model, out: Path, opset: int) -> Optional[float]:
    """Write ``export_module(model)`` as ONNX to ``out`` with dynamic N, H, W.

    The graph is written to a temporary file, checked against PyTorch with onnxruntime
    (where installed) at odd and even sizes, and only then renamed to ``out``. Returns the
    largest difference found, or None when onnxruntime is missing.
    """
    import torch

    module = export_module(model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A hidden name beside the target (same file system, so the rename is atomic) that the
    # exporter creates itself, with the usual permissions.
    temp_name = str(out.parent / f".{out.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter (no onnxscript needed) warns about its deprecation and
            # about the shape values it traces; the check below is what vouches for the graph.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (torch.rand(1, 2, 64, 64),), temp_name, dynamo=False, opset_version=opset,
                input_names=["images"], output_names=["fused"],
                dynamic_axes={name: {0: "batch", 2: "height", 3: "width"} for name in ("images", "fused")},
            )
        try:
            difference = check_onnx(model, Path(temp_name))
        except ImportError:
            difference = None
        if difference is not None and difference > 1e-4:
            raise RuntimeError(f"ONNX export of {out} differs from PyTorch by {difference:.2e}; not written")
        os.replace(temp_name, out)
        return difference
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)


def check_onnx(model, path: Path, sizes=((37, 29), (64, 48), (3, 5))) -> float:
    """Largest |ONNX - PyTorch| of the fused output over random (2, 2, H, W) inputs of ``sizes``."""
    import numpy as np
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for height, width in sizes:
        images = torch.rand(2, 2, height, width, generator=generator)
        with torch.no_grad():
            expected = model(images)[0].numpy()
        got = session.run(["fused"], {"images": images.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def run_export(**options) -> int:
    import torch

    from mmdrfuse.fusion.networks import build_model, load_model

    args = argparse.Namespace(**options)
    if args.weights:
        model = load_model(args.model, args.weights).eval()
    elif args.random_init:
        print(f"mmdrfuse export: exporting a randomly initialised {args.model} (--random-init, seed 0)", file=sys.stderr)
        torch.manual_seed(0)
        model = build_model(args.model).eval()
    else:
        raise ValueError("export needs --weights FILE (released .model or a checkpoint of 'mmdrfuse train'); "
                         "--random-init exports random weights, e.g. to test a runtime")
    out = Path(args.out)
    difference = export_onnx(model, out, args.opset)
    checked = ("not checked (onnxruntime not installed)" if difference is None
               else f"onnxruntime vs PyTorch max |diff| {difference:.1e} at odd and even sizes")
    print(f"exported {out}: {args.model}, opset {args.opset}, dynamic batch/height/width; {checked}")
    return 0
