"""Commands of mmdrfuse.fusion (see mmdrfuse/cli.py): ``fuse``, ``train teacher | student``.

Options: the ``fuse``, ``train_teacher`` and ``train_student`` sections of
mmdrfuse/cfg/default.yaml; each handler takes one keyword argument per key.
"""
from __future__ import annotations

import json
import sys

from mmdrfuse.config import add_command, add_group

TRAINING_SUMMARY = {
    "teacher": "paper recipe: 8 epochs, batch 36, loss 2 int + 1 percep + 0.1 grad",
    "student": "paper recipe: 10 epochs, batch 26, loss 1 int + 2 percep + 0.1 grad + 5 distill, conv2 from the teacher",
}


def fuse_command(*, ir, vi, out, json: str, overwrite, quiet, **settings) -> int:
    from mmdrfuse.fusion.infer import fuse_folder

    result = fuse_folder(ir_dir=ir, vi_dir=vi, out_dir=out, overwrite=overwrite, progress=not quiet, **settings)
    print(
        f"fused {result['n']} pairs with the {settings['model']} ({result['engine']}, {result['device']}) -> {result['out_dir']}: "
        f"network {result['seconds']:.3f} s ({1000 * result['seconds_per_image']:.2f} ms/image), wall {result['wall_seconds']:.2f} s"
    )
    if json:
        from mmdrfuse.files import write_text_atomic

        write_text_atomic(json, _json_text(result))
        print(f"timings -> {json}", file=sys.stderr)
    return 0


def _json_text(payload) -> str:
    return json.dumps(payload, indent=2) + "\n"


def train_command(kind: str, *, patches, ir, vi, out, quiet, teacher=None, **settings) -> int:
    from mmdrfuse.fusion.train import train_model

    if patches is None and (ir is None or vi is None):
        raise ValueError("give the training patches: --patches STORE, or --ir DIR --vi DIR (same-named gray patches)")
    if patches is not None and (ir is not None or vi is not None):
        raise ValueError("give either --patches or --ir/--vi, not both")
    train_model(
        kind,
        patches=patches if patches is not None else ir,
        vi_dir=vi if patches is None else None,
        out_dir=out,
        teacher_weights=teacher,
        progress=not quiet,
        **settings,
    )
    return 0


def train_teacher_command(**options) -> int:
    return train_command("teacher", **options)


def train_student_command(**options) -> int:
    return train_command("student", **options)


def register(subparsers) -> None:
    """Add ``fuse`` and ``train teacher | student``."""
    add_command(subparsers, "fuse", section="fuse", handler=fuse_command,
                help="fuse folders of infrared/visible pairs (matched by file stem) into 8-bit PNGs")
    kinds = add_group(subparsers, "train", help="train the teacher or the student (paper recipe by default)",
                      dest="train_command", metavar="MODEL")
    for kind, handler in (("teacher", train_teacher_command), ("student", train_student_command)):
        add_command(kinds, kind, section=f"train_{kind}", handler=handler,
                    help=f"train the {kind} ({TRAINING_SUMMARY[kind]}; Adam 1e-4, dynamic refresh; --recipe release for the released code's rules)")
