"""Commands of mmdrfuse.fusion (see mmdrfuse/cli.py): ``fuse``, ``train teacher | student``."""
from __future__ import annotations

import argparse
import json
import sys

from mmdrfuse.config import add_command, defaults


def _none_or_int(text: str):
    return None if str(text).lower() in ("none", "null", "") else int(text)


def _require(args, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) in (None, "")]
    if missing:
        raise ValueError(f"missing required option(s): {', '.join(missing)}")


def _fuse(args) -> int:
    _require(args, "ir", "vi", "out")
    from mmdrfuse.fusion.infer import fuse_folder

    result = fuse_folder(
        model=args.model, weights=args.weights, ir_dir=args.ir, vi_dir=args.vi, out_dir=args.out,
        device=args.device, scaling=args.scaling, color=args.color, batch=args.batch,
        progress=not args.quiet, engine=args.engine,
    )  # fmt: skip
    print(
        f"fused {result['n']} pairs with the {args.model} ({result['engine']}, {result['device']}) -> {result['out_dir']}: "
        f"network {result['seconds']:.3f} s ({1000 * result['seconds_per_image']:.2f} ms/image), wall {result['wall_seconds']:.2f} s"
    )
    if args.json:
        from mmdrfuse.files import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
        print(f"timings -> {args.json}", file=sys.stderr)
    return 0


def _train(kind: str):
    def handler(args) -> int:
        from mmdrfuse.fusion.train import train_model

        if args.patches is None and (args.ir is None or args.vi is None):
            raise ValueError("give the training patches: --patches STORE, or --ir DIR --vi DIR (same-named gray patches)")
        if args.patches is not None and (args.ir is not None or args.vi is not None):
            raise ValueError("give either --patches or --ir/--vi, not both")
        overrides = {k: getattr(args, k) for k in defaults(f"train_{kind}") if k != "out"}
        overrides.update(limit=args.limit, max_steps=args.max_steps, resume=args.resume)
        train_model(
            kind,
            patches=args.patches if args.patches is not None else args.ir,
            vi_dir=args.vi if args.patches is None else None,
            out_dir=args.out,
            teacher_weights=getattr(args, "teacher", None),
            progress=not args.quiet,
            **overrides,
        )
        return 0

    return handler


def _add_train_command(subparsers, kind: str) -> None:
    D = defaults(f"train_{kind}")
    recipe = (
        "paper recipe: 8 epochs, batch 36, loss 2 int + 1 percep + 0.1 grad"
        if kind == "teacher"
        else "paper recipe: 10 epochs, batch 26, loss 1 int + 2 percep + 0.1 grad + 5 distill, conv2 from the teacher"
    )
    parser = add_command(subparsers, kind, help=f"train the {kind} ({recipe}; Adam 1e-4, dynamic refresh)")
    data = parser.add_argument_group("data")
    data.add_argument("--patches", help="patch store from 'mmdrfuse prepare patches'")
    data.add_argument("--ir", help="folder of infrared gray patches (with --vi: same-named visible patches)")
    data.add_argument("--vi", help="folder of visible gray patches")
    data.add_argument("--limit", type=int, help="use only the first N patches")
    if kind == "student":
        parser.add_argument("--teacher", help="trained teacher weights (released teacher.model or teacher.pth); "
                                              "optional only with --distill off")
    parser.add_argument("--out", default=D["out"], help=f"output folder (default {D['out']})")
    parser.add_argument("--epochs", type=int, default=D["epochs"])
    parser.add_argument("--batch", type=int, default=D["batch"])
    parser.add_argument("--lr", type=float, default=D["lr"])
    parser.add_argument("--intensity-weight", type=float, default=D["intensity_weight"])
    parser.add_argument("--perception-weight", type=float, default=D["perception_weight"])
    parser.add_argument("--gradient-weight", type=float, default=D["gradient_weight"])
    parser.add_argument("--recipe", choices=("paper", "release"), default=D["recipe"],
                        help="paper: per-sample refresh and distillation norm, bf16 VGG on CUDA; release: the released "
                             "code's batch rules, fp32, teacher patch order shuffled once (explicit options win)")
    parser.add_argument("--refresh", choices=("sample", "batch", "off"), default=D["refresh"],
                        help="dynamic refresh: per-sample decisions, the released code's batch-mean rule, or off (default: the recipe's)")
    parser.add_argument("--refresh-weight", type=float, default=D["refresh_weight"], help="gap multiplier (10 in the released code)")
    if kind == "student":
        parser.add_argument("--distill", choices=("digestible", "plain", "off"), default=D["distill"],
                            help="digestible: feature + output taps; plain: output only; off: none")
        parser.add_argument("--distill-weight", type=float, default=D["distill_weight"])
        parser.add_argument("--distill-norm", choices=("sample", "batch"), default=D["distill_norm"],
                            help="normalise each sample's attention map (paper) or the whole batch (released code); default: the recipe's")
    parser.add_argument("--perceptual", choices=("vgg19", "vgg19-random"), default=D["perceptual"],
                        help="vgg19: ImageNet weights (torchvision cache or --vgg-weights); vgg19-random: offline, fixed seed")
    parser.add_argument("--vgg-weights", default=D["vgg_weights"], help="path of vgg19-dcbb9e9d.pth")
    parser.add_argument("--seed", type=int, default=D["seed"])
    parser.add_argument("--device", default=D["device"], help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=D["amp"],
                        help="bf16 autocast for the content loss's VGG-19 on CUDA (default: the recipe's)")
    parser.add_argument("--shuffle", choices=("epoch", "once"), default=D["shuffle"],
                        help="epoch: a new patch order every epoch; once: one order for all (default: the recipe's)")
    parser.add_argument("--checkpoint-every", type=int, default=D["checkpoint_every"], help="also save the resume state every N steps")
    parser.add_argument("--max-steps", type=_none_or_int, help="stop after N steps in all (resumable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from last_state.pt")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_train(kind))


def register(subparsers) -> None:
    """Add ``fuse`` and ``train teacher | student``."""
    D = defaults("fuse")
    parser = add_command(subparsers, "fuse", help="fuse folders of infrared/visible pairs (matched by file stem) into 8-bit PNGs")
    parser.add_argument("--model", choices=("student", "teacher"), default=D["model"])
    parser.add_argument("--weights", default=D["weights"],
                        help="released student.model/teacher.model or a checkpoint from 'mmdrfuse train' (required until the package ships weights of its own)")
    parser.add_argument("--ir", help="folder of infrared images (MRI-PET: the PET folder)")
    parser.add_argument("--vi", help="folder of visible images (MRI-PET: the MRI folder)")
    parser.add_argument("--out", default=D["out"], help="output folder for <stem>.png (not inside --ir/--vi)")
    parser.add_argument("--device", default=D["device"], help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--scaling", choices=("minmax", "clip"), default=D["scaling"],
                        help="minmax: per-image stretch to 0..255 (the paper's protocol); clip: raw [0, 1] output")
    parser.add_argument("--color", choices=("gray", "ycbcr"), default=D["color"],
                        help="ycbcr: fuse the visible image's Y channel and keep its Cr/Cb (colour output)")
    parser.add_argument("--batch", type=int, default=D["batch"], help="pairs of one size per network call")
    parser.add_argument("--engine", choices=("auto", "eager", "fast"), default=D["engine"],
                        help="student on the CPU: the fast kernel (fast), PyTorch (eager), or fast when available (auto)")
    parser.add_argument("--json", metavar="FILE", help="also write the counts and timings as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_fuse)

    train = subparsers.add_parser("train", help="train the teacher or the student (paper recipe by default)",
                                  description="Train the MMDRFuse teacher, then the student distilled from it.")
    train.set_defaults(func=lambda _: train.print_help() or 2)
    kinds = train.add_subparsers(dest="train_command", metavar="MODEL")
    for kind in ("teacher", "student"):
        _add_train_command(kinds, kind)
