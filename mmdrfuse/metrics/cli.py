"""Commands of mmdrfuse.metrics.cli (see mmdrfuse/cli.py): ``mmdrfuse evaluate``."""
from __future__ import annotations

import argparse
import sys
from typing import Dict

from mmdrfuse.config import add_command, defaults


def register(subparsers) -> None:
    """Add this module's commands to the top-level parser."""
    d = defaults("evaluate")
    parser = add_command(
        subparsers,
        "evaluate",
        help="score fused images against their infrared (A) and visible (B) sources",
        epilog="Pairs are matched by file stem; every image is read as gray (BGR2GRAY) on the 0..255 scale. "
        "Metrics: SD SCD VIF Qabf SSIM CC (the paper's table) and EN SF AG MI MSE PSNR.",
    )
    fused = parser.add_mutually_exclusive_group(required=True)
    fused.add_argument("--fused", metavar="DIR", help="folder of fused images of one method")
    fused.add_argument(
        "--method", metavar="NAME=DIR", action="append", help="a method and its fused folder; repeat for a comparison table"
    )
    parser.add_argument("--ir", metavar="DIR", required=True, help="infrared (A) source folder")
    parser.add_argument("--vi", metavar="DIR", required=True, help="visible (B) source folder")
    parser.add_argument("--metrics", default=d["metrics"], help="comma-separated metric names, 'paper', 'vifb' or 'all' (default: %(default)s)")
    parser.add_argument(
        "--convention", default=d["convention"], choices=("mmif", "vifb"),
        help="mmif: the paper's Python evaluator (gray images); vifb: VIFB's MATLAB code (colour kept, its 13 metrics) (default: %(default)s)",
    )
    parser.add_argument("--json", metavar="FILE", help="write means and per-image values as JSON")
    parser.add_argument("--csv", metavar="FILE", help="write one row per image (and method) as CSV")
    parser.add_argument("--markdown", metavar="FILE", help="write a markdown table")
    parser.add_argument("--device", default=d["device"], choices=("cpu", "cuda", "auto"), help="(default: %(default)s)")
    parser.add_argument("--batch", type=int, default=d["batch"], help="images per batch on CUDA (default: %(default)s)")
    parser.add_argument(
        "--allow-missing", action="store_true", help="skip (and count) images without partners or of another size"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_evaluate)


def _parse_methods(specs) -> Dict[str, str]:
    methods: Dict[str, str] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name.strip() or not folder:
            raise ValueError(f"--method expects NAME=DIR, got {spec!r}")
        if name in methods:
            raise ValueError(f"--method {name!r} given twice")
        methods[name.strip()] = folder
    return methods


def run_evaluate(args: argparse.Namespace) -> int:
    from mmdrfuse.files import write_text_atomic
    from mmdrfuse.metrics import report
    from mmdrfuse.metrics.evaluate import evaluate_folders, parse_metrics

    # The default list names the mmif metrics; under vifb the default is VIFB's 13.
    names = "vifb" if args.convention == "vifb" and args.metrics == defaults("evaluate")["metrics"] else args.metrics
    metrics = parse_metrics(names, args.convention)
    if args.batch < 1:
        raise ValueError(f"--batch must be at least 1, got {args.batch}")
    options = dict(
        metrics=metrics, allow_missing=args.allow_missing, progress=not args.no_progress, device=args.device, batch_size=args.batch,
        convention=args.convention,
    )
    if args.method:
        methods = _parse_methods(args.method)
        results = {name: evaluate_folders(folder, args.ir, args.vi, **options) for name, folder in methods.items()}
        payload = {"methods": results}
        markdown = report.methods_markdown(results, metrics)
    else:
        result = evaluate_folders(args.fused, args.ir, args.vi, **options)
        results = {"fused": result}
        payload = result
        markdown = report.per_image_markdown(result, metrics)
    for name, result in results.items():
        if result["skipped"]:
            print(f"{name}: skipped {len(result['skipped'])} image(s) (--allow-missing):", file=sys.stderr)
            for message in result["skipped"]:
                print(f"  {message}", file=sys.stderr)
    print(report.terminal_table(results, metrics))
    if args.json:
        write_text_atomic(args.json, report.to_json(payload))
    if args.csv:
        write_text_atomic(args.csv, report.per_image_csv(results, metrics))
    if args.markdown:
        write_text_atomic(args.markdown, markdown)
    return 0
