"""Commands of mmdrfuse.metrics.cli (see mmdrfuse/cli.py): ``mmdrfuse evaluate``."""
from __future__ import annotations

import sys
from typing import Dict

from mmdrfuse.config import add_command
from mmdrfuse.errors import DataError


def register(subparsers) -> None:
    """Add ``evaluate`` (options: the ``evaluate`` section of mmdrfuse/cfg/default.yaml)."""
    add_command(
        subparsers,
        "evaluate",
        section="evaluate",
        handler=run_evaluate,
        help="score fused images against their infrared (A) and visible (B) sources",
        epilog="Pairs are matched by file stem. mmif (default): every image is read as gray (BGR2GRAY) on the 0..255 "
        "scale; metrics SD SCD VIF Qabf SSIM CC (the paper's table) and EN SF AG MI MSE PSNR. vifb: images as stored "
        "(colour kept), VIFB's CE EN MI PSNR AG EI Qabf SD SF RMSE SSIM Qcb Qcv (docs/metrics.md).",
    )


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


def run_evaluate(*, fused, method, ir, vi, convention, metrics, json, csv, markdown, device, batch, allow_missing,
                 no_progress) -> int:
    from mmdrfuse.files import write_text_atomic
    from mmdrfuse.metrics import report
    from mmdrfuse.metrics.evaluate import evaluate_folders, parse_metrics

    if bool(fused) == bool(method):
        raise DataError("give --fused DIR (one method) or --method NAME=DIR (repeatable), not both")
    names = parse_metrics(metrics, convention)
    if batch < 1:
        raise ValueError(f"--batch must be at least 1, got {batch}")
    options = dict(metrics=names, allow_missing=allow_missing, progress=not no_progress, device=device, batch_size=batch,
                   convention=convention)
    if method:
        methods = _parse_methods(method)
        results = {name: evaluate_folders(folder, ir, vi, **options) for name, folder in methods.items()}
        payload = {"methods": results}
        table = report.methods_markdown(results, names)
    else:
        result = evaluate_folders(fused, ir, vi, **options)
        results = {"fused": result}
        payload = result
        table = report.per_image_markdown(result, names)
    for name, result in results.items():
        if result["skipped"]:
            print(f"{name}: skipped {len(result['skipped'])} image(s) (--allow-missing):", file=sys.stderr)
            for message in result["skipped"]:
                print(f"  {message}", file=sys.stderr)
    print(report.terminal_table(results, names))
    if json:
        write_text_atomic(json, report.to_json(payload))
    if csv:
        write_text_atomic(csv, report.per_image_csv(results, names))
    if markdown:
        write_text_atomic(markdown, table)
    return 0
