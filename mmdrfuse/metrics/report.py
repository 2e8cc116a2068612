"""Human and machine-readable forms of evaluation results: terminal table, markdown, CSV, JSON.

A result is what :func:`mmdrfuse.metrics.evaluate.evaluate_folders` returns; several
methods are ``{name: result}``.
"""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Dict, List, Mapping, Sequence

from mmdrfuse.metrics.evaluate import LOWER_IS_BETTER


def _number(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def _json_safe(value):
    """JSON has no infinity or NaN (PSNR of identical images is +inf): such values become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def to_json(data: Mapping) -> str:
    return json.dumps(_json_safe(dict(data)), indent=2, allow_nan=False) + "\n"


def per_image_csv(results: Mapping[str, Mapping], metrics: Sequence[str]) -> str:
    """One row per (method, image); the method column is left out for a single unnamed result."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    with_method = len(results) > 1
    writer.writerow((["method"] if with_method else []) + ["name", *metrics])
    for method, result in results.items():
        for row in result["per_image"]:
            values = [repr(row[name]) for name in metrics]
            writer.writerow(([method] if with_method else []) + [row["name"], *values])
    return buffer.getvalue()


def rank_marks(means: Mapping[str, Mapping[str, float]], metrics: Sequence[str]) -> Dict[str, Dict[str, str]]:
    """``{method: {metric: "best" | "second" | ""}}``: higher is better except for MSE; ties share a rank."""
    marks: Dict[str, Dict[str, str]] = {method: {} for method in means}
    for metric in metrics:
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        values = {method: sign * row[metric] for method, row in means.items() if not math.isnan(row[metric])}
        ranked = sorted(set(values.values()), reverse=True)
        for method in means:
            value = values.get(method)
            if value is not None and len(means) > 1 and value == ranked[0]:
                marks[method][metric] = "best"
            elif value is not None and len(ranked) > 1 and value == ranked[1]:
                marks[method][metric] = "second"
            else:
                marks[method][metric] = ""
    return marks


def methods_markdown(results: Mapping[str, Mapping], metrics: Sequence[str], digits: int = 4) -> str:
    """The paper's table: a row per method, a column per metric, best **bold**, second <u>underlined</u>."""
    means = {method: result["mean"] for method, result in results.items()}
    marks = rank_marks(means, metrics)
    arrows = [f"{name} {'↓' if name in LOWER_IS_BETTER else '↑'}" for name in metrics]
    lines = ["| Method | " + " | ".join(arrows) + " |", "| --- |" + " --- |" * len(metrics)]
    for method, row in means.items():
        cells = []
        for name in metrics:
            text = _number(row[name], digits)
            mark = marks[method][name]
            cells.append(f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text)
        lines.append(f"| {method} (n={results[method]['n']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def per_image_markdown(result: Mapping, metrics: Sequence[str], digits: int = 4) -> str:
    """A row per image and a final mean row."""
    lines = ["| Image | " + " | ".join(metrics) + " |", "| --- |" + " --- |" * len(metrics)]
    for row in result["per_image"]:
        lines.append(f"| {row['name']} | " + " | ".join(_number(row[name], digits) for name in metrics) + " |")
    means = " | ".join(f"**{_number(result['mean'][name], digits)}**" for name in metrics)
    lines.append(f"| **mean (n={result['n']})** | {means} |")
    return "\n".join(lines) + "\n"


def terminal_table(results: Mapping[str, Mapping], metrics: Sequence[str], digits: int = 4) -> str:
    """Mean of every metric per method, aligned for a terminal."""
    header = ["method", "n", *metrics]
    rows: List[List[str]] = [header]
    for method, result in results.items():
        rows.append([method, str(result["n"]), *(_number(result["mean"][name], digits) for name in metrics)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
