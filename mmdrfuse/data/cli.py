"""Commands of mmdrfuse.data (see mmdrfuse/cli.py): ``prepare patches | yolo | synthetic``, ``validate``.

Options: the ``prepare_patches``, ``prepare_yolo``, ``prepare_synthetic`` and ``validate``
sections of mmdrfuse/cfg/default.yaml; each handler takes one keyword argument per key.
"""
from __future__ import annotations

import json
import sys

from mmdrfuse.config import add_command, add_group


def prepare_patches_command(*, root, out, export_images, overwrite, quiet, **settings) -> int:
    from mmdrfuse.data.patches import prepare_patches

    prepare_patches(root, out=out, export_images=export_images, overwrite=overwrite, progress=not quiet, **settings)
    return 0


def prepare_yolo_command(*, root, images, out, train, val, seed, manifest, select, strict, overwrite, quiet) -> int:
    from mmdrfuse.data.yolo import build_yolo_dataset, select_subset
    from mmdrfuse.files import write_text_atomic

    if select:
        subset = select_subset(root, train=train, val=val, seed=seed)
        write_text_atomic(select, json.dumps(subset, indent=2) + "\n")
        for note in subset["notes"]:
            print(note)
        print(f"subset of {len(subset['train'])} train + {len(subset['val'])} val ids (val from the "
              f"{subset['val_from']} split) -> {select}; fuse these, then pass --manifest {select}")
        return 0
    if not images or not out:
        raise ValueError("--images and --out are required (or --select FILE to only draw the subset)")
    subset = manifest if manifest else select_subset(root, train=train, val=val, seed=seed)
    build_yolo_dataset(root, images, out, manifest=subset, strict=strict, overwrite=overwrite, progress=not quiet)
    return 0


def prepare_synthetic_command(*, out, overwrite, quiet, **settings) -> int:
    from mmdrfuse.data.synthetic import generate

    folder = generate(out, overwrite=overwrite, progress=not quiet, **settings)
    print(f"SYNTHETIC LLVIP-like data ({settings['train']} train + {settings['test']} test pairs, "
          f"{settings['size']}) -> {folder}")
    return 0


def validate_command(*, root, split, decode, strict, no_annotations, json: str, show, quiet) -> int:
    from mmdrfuse.data.llvip import validate
    from mmdrfuse.files import write_text_atomic

    report = validate(root, split, strict=strict, annotations=not no_annotations, decode=decode, progress=not quiet)
    for file, message in report.problems[:show]:
        print(f"  {file}: {message}")
    if len(report.problems) > show:
        print(f"  ... and {len(report.problems) - show} more (--json FILE lists all)")
    print(report.summary())
    if json:
        write_text_atomic(json, _json_text(report.to_dict()))
        print(f"report -> {json}", file=sys.stderr)
    return 0 if not report.problems else 1


def _json_text(payload) -> str:
    return json.dumps(payload, indent=2) + "\n"


def register(subparsers) -> None:
    """Add ``prepare`` (patches | yolo | synthetic) and ``validate``."""
    what = add_group(subparsers, "prepare", help="build training patches, YOLO datasets or synthetic LLVIP-like data",
                     dest="prepare_command", metavar="WHAT")
    add_command(what, "patches", section="prepare_patches", handler=prepare_patches_command,
                help="cut LLVIP pairs into gray training patches (the paper's recipe)")
    add_command(what, "yolo", section="prepare_yolo", handler=prepare_yolo_command,
                help="build a YOLO dataset from LLVIP annotations and one image per id")
    add_command(what, "synthetic", section="prepare_synthetic", handler=prepare_synthetic_command,
                help="write SYNTHETIC LLVIP-like night street pairs (not real data)")
    add_command(subparsers, "validate", section="validate", handler=validate_command,
                help="check an LLVIP folder: partners, sizes, annotations, boxes")
