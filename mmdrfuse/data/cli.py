"""Commands of mmdrfuse.data (see mmdrfuse/cli.py): ``prepare patches | yolo | synthetic``, ``validate``."""
from __future__ import annotations

import json
import sys

from mmdrfuse.config import add_command, defaults


def _patches(args) -> int:
    from mmdrfuse.data.io import parse_depth_range
    from mmdrfuse.data.patches import prepare_patches

    prepare_patches(
        args.root, split=args.split, pairs=args.pairs, size=args.size, stride=args.stride, seed=args.seed,
        out=args.out, export_images=args.export_images, strict=args.strict, progress=not args.quiet,
        overwrite=args.overwrite, depth_range=parse_depth_range(args.depth_range),
    )
    return 0


def _yolo(args) -> int:
    from mmdrfuse.data.yolo import build_yolo_dataset, select_subset
    from mmdrfuse.files import write_text_atomic

    if args.select:
        subset = select_subset(args.root, train=args.train, val=args.val, seed=args.seed)
        write_text_atomic(args.select, json.dumps(subset, indent=2) + "\n")
        for note in subset["notes"]:
            print(note)
        print(f"subset of {len(subset['train'])} train + {len(subset['val'])} val ids (val from the "
              f"{subset['val_from']} split) -> {args.select}; fuse these, then pass --manifest {args.select}")
        return 0
    if not args.images or not args.out:
        raise ValueError("--images and --out are required (or --select FILE to only draw the subset)")
    build_yolo_dataset(
        args.root, args.images, args.out, train=args.train, val=args.val, seed=args.seed,
        manifest=args.manifest, strict=args.strict, progress=not args.quiet, overwrite=args.overwrite,
    )
    return 0


def _synthetic(args) -> int:
    from mmdrfuse.data.synthetic import generate

    out = generate(args.out, train=args.train, test=args.test, size=args.size, seed=args.seed, progress=not args.quiet,
                   overwrite=args.overwrite,
                   pedestrians=args.pedestrians, height=args.height, ir_only=args.ir_only, vi_only=args.vi_only)
    print(f"SYNTHETIC LLVIP-like data ({args.train} train + {args.test} test pairs, {args.size}) -> {out}")
    return 0


def _validate(args) -> int:
    from mmdrfuse.data.llvip import validate
    from mmdrfuse.files import write_text_atomic

    report = validate(args.root, args.split, strict=args.strict, annotations=not args.no_annotations,
                      decode=args.decode, progress=not args.quiet)
    for file, message in report.problems[: args.show]:
        print(f"  {file}: {message}")
    if len(report.problems) > args.show:
        print(f"  ... and {len(report.problems) - args.show} more (--json FILE lists all)")
    print(report.summary())
    if args.json:
        write_text_atomic(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"report -> {args.json}", file=sys.stderr)
    return 0 if not report.problems else 1


def register(subparsers) -> None:
    """Add ``prepare`` (patches | yolo | synthetic) and ``validate``."""
    prepare = subparsers.add_parser("prepare", help="build training patches, YOLO datasets or synthetic LLVIP-like data",
                                     description="Build training patches, YOLO datasets or synthetic LLVIP-like data.")
    what = prepare.add_subparsers(dest="prepare_command", metavar="WHAT")

    D = defaults("prepare_patches")
    parser = add_command(what, "patches", help="cut LLVIP pairs into gray training patches (the paper's recipe)")
    parser.add_argument("--root", required=True, help="LLVIP folder (infrared/, visible/, Annotations/)")
    parser.add_argument("--split", default=D["split"], choices=("train", "test"))
    parser.add_argument("--pairs", type=int, default=D["pairs"], help="pairs drawn with --seed (all when fewer exist)")
    parser.add_argument("--size", type=int, default=D["size"], help="patch side in pixels")
    parser.add_argument("--stride", type=int, default=D["stride"])
    parser.add_argument("--seed", type=int, default=D["seed"])
    parser.add_argument("--out", required=True, help="patch store folder (ir.npy, vi.npy, index.csv, meta.json)")
    parser.add_argument("--export-images", action="store_true", help="also write ir/ and vi/ folders of PNG patches")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad pair instead of skipping it")
    parser.add_argument("--depth-range", default=D["depth_range"],
                        help="16-bit images to 8 bits: minmax (per image), full (the type's range) or LO,HI")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output of this command in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_patches)

    D = defaults("prepare_yolo")
    parser = add_command(what, "yolo", help="build a YOLO dataset from LLVIP annotations and one image per id")
    parser.add_argument("--root", required=True, help="LLVIP folder (its Annotations/ and split lists are used)")
    parser.add_argument("--images",
                        help="folder of images named <id>.* (e.g. fused outputs), or with train/ and test/ subfolders")
    parser.add_argument("--out", help="dataset folder (images/, labels/, data.yaml, manifest.json)")
    parser.add_argument("--train", type=int, default=D["train"], help="pairs from the official train split")
    parser.add_argument("--val", type=int, default=D["val"], help="pairs from the official test split")
    parser.add_argument("--seed", type=int, default=D["seed"])
    parser.add_argument("--manifest", metavar="FILE", default=None,
                        help="reuse the subset of an earlier manifest.json (same images for every method)")
    parser.add_argument("--select", metavar="FILE",
                        help="only draw the subset and write it to FILE (fuse just those ids, then pass --manifest FILE)")
    parser.add_argument("--strict", action="store_true", help="stop at the first image without a usable annotation")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output of this command in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_yolo)

    D = defaults("prepare_synthetic")
    parser = add_command(what, "synthetic", help="write SYNTHETIC LLVIP-like night street pairs (not real data)")
    parser.add_argument("--out", required=True, help="dataset folder in LLVIP's layout")
    parser.add_argument("--train", type=int, default=D["train"])
    parser.add_argument("--test", type=int, default=D["test"])
    parser.add_argument("--size", default=D["size"], help="WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=D["seed"])
    parser.add_argument("--pedestrians", default=D["pedestrians"], metavar="MIN,MAX", help="pedestrians per image")
    parser.add_argument("--height", default=D["height"], metavar="MIN,MAX",
                        help="pedestrian height as a fraction of the image height")
    parser.add_argument("--ir-only", type=float, default=D["ir_only"], help="fraction seen only in infrared (darkness)")
    parser.add_argument("--vi-only", type=float, default=D["vi_only"], help="fraction seen only in visible (behind glass)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output of this command in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_synthetic)

    D = defaults("validate")
    parser = add_command(subparsers, "validate", help="check an LLVIP folder: partners, sizes, annotations, boxes")
    parser.add_argument("--root", required=True, help="LLVIP folder")
    parser.add_argument("--split", default=D["split"], choices=("train", "test"), help="default: every split present")
    parser.add_argument("--strict", action="store_true", help="stop at the first problem (exit status 2)")
    parser.add_argument("--no-annotations", action="store_true", help="check images only (for fusion training)")
    parser.add_argument("--decode", action="store_true", default=D["decode"],
                        help="decode every image in full (finds truncated or corrupt files; slower than headers)")
    parser.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    parser.add_argument("--show", type=int, default=D["show"], help="problems to print")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_validate)
