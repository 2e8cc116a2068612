"""The comparison report: results.json, results.csv, report.md, the paper's Figure 8
(mAP@.5:.95 against fusion time, ``map_vs_time.png``) and a grid of validation examples
with true and predicted boxes (``examples.png``). Every file is written atomically."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from mmdrfuse.data.io import read_color, write_image_atomic
from mmdrfuse.detection.methods import SINGLE_MODALITIES
from mmdrfuse.files import write_bytes_atomic, write_text_atomic

COLUMNS = (
    "map50_95", "map50", "precision", "recall", "map50_95_coco", "map50_coco", "fusion_ms_per_image", "train_seconds",
)
HEADERS = (
    "mAP@.5:.95", "mAP@.5", "precision", "recall", "mAP@.5:.95 (pycocotools)", "mAP@.5 (pycocotools)",
    "fusion ms/image", "detector training s",
)


def fused_vs_single_sentence(methods: Dict[str, Dict]) -> str:
    """One sentence, computed from the numbers, on whether the fused methods beat both single modalities."""
    singles = {n: m["map50_95"] for n, m in methods.items() if n in SINGLE_MODALITIES}
    fused = {n: m["map50_95"] for n, m in methods.items() if n not in SINGLE_MODALITIES}
    if not singles or not fused:
        return "No comparison with the single modalities: the run needs infrared or visible and at least one fused method."
    best_single = max(singles, key=singles.get)
    winners = sorted((n for n in fused if fused[n] > singles[best_single]), key=fused.get, reverse=True)
    reference = f"the best single modality ({best_single}, mAP@.5:.95 {singles[best_single]:.3f})"
    if len(winners) == len(fused):
        worst = min(fused, key=fused.get)
        return (
            f"Every fused method beats both single modalities on mAP@.5:.95: the weakest fused method "
            f"({worst}, {fused[worst]:.3f}) is above {reference}."
        )
    if winners:
        listed = ", ".join(f"{n} {fused[n]:.3f}" for n in winners)
        losers = ", ".join(f"{n} {fused[n]:.3f}" for n in sorted(set(fused) - set(winners)))
        return (
            f"{len(winners)} of {len(fused)} fused methods beat {reference} on mAP@.5:.95 ({listed}); "
            f"the others do not ({losers})."
        )
    best = max(fused, key=fused.get)
    return (
        f"No fused method beats {reference} on mAP@.5:.95; the best fused method is {best} at {fused[best]:.3f}."
    )


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return str(value)


def markdown(results: Dict, figures: Sequence[str]) -> str:
    methods, protocol = results["methods"], results["protocol"]
    order = sorted(methods, key=lambda n: methods[n]["map50_95"], reverse=True)
    start = protocol.get("weights") or "random initialisation"
    if protocol.get("warm_start"):
        start = (f"a warm-start detector ({protocol['warm_start'].get('epochs')} epochs on separate synthetic scenes, "
                 f"each shown as infrared or visible: {start})")
    lines = [
        "# Fuse-then-detect comparison",
        "",
        f"Data: {protocol.get('data')}"
        + (" (SYNTHETIC scenes from mmdrfuse.data.synthetic, not LLVIP)." if protocol.get("synthetic_data") else "."),
        "",
        f"Detector: {protocol.get('model')} from {start}, "
        f"{protocol.get('epochs')} epochs, batch {protocol.get('batch')}, {protocol.get('optimizer')}, "
        f"image size {protocol.get('imgsz')}, seed {protocol.get('seed')}; "
        f"{protocol.get('train_images')} training and {protocol.get('val_images')} validation images, "
        "the same ids for every method.",
        "",
        fused_vs_single_sentence(methods),
        "",
        "| method | " + " | ".join(HEADERS) + " |",
        "| --- " * (len(HEADERS) + 1) + "|",
    ]
    for name in order:
        lines.append(f"| {name} | " + " | ".join(_cell(methods[name].get(k)) for k in COLUMNS) + " |")
    lines += [
        "",
        "mAP from ultralytics' validator; the pycocotools columns re-score the saved predictions "
        "(predictions.json per method) with COCO's 101-point interpolation. Fusion time is compute only "
        f"(no file I/O) on device '{protocol.get('device', 'auto')}'; '-' for the single modalities "
        "and for folders given with --method.",
        "",
    ]
    lines += [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, methods: Dict[str, Dict]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("method",) + COLUMNS)
    for name, values in methods.items():
        writer.writerow((name,) + tuple("" if values.get(k) is None else values.get(k) for k in COLUMNS))
    write_text_atomic(path, buffer.getvalue())


def plot_map_vs_time(path: Path, methods: Dict[str, Dict]) -> None:
    """Figure 8 of the paper: one point per fusion method; single modalities as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    timed = {n: m for n, m in methods.items() if m.get("fusion_ms_per_image") is not None}
    for name, values in timed.items():
        axes.scatter(values["fusion_ms_per_image"], values["map50_95"], s=40)
        axes.annotate(name, (values["fusion_ms_per_image"], values["map50_95"]), textcoords="offset points", xytext=(5, 4))
    for name, values in methods.items():
        if values.get("fusion_ms_per_image") is None:
            axes.axhline(values["map50_95"], linestyle="--", linewidth=1, color="gray")
            axes.annotate(name, (0.99, values["map50_95"]), xycoords=("axes fraction", "data"), textcoords="offset points",
                          xytext=(0, 3), color="gray", ha="right")
    if timed and all(v["fusion_ms_per_image"] > 0 for v in timed.values()):
        axes.set_xscale("log")
    axes.set_xlabel("fusion time per image (ms)")
    axes.set_ylabel("mAP@.5:.95")
    axes.set_title("Detection accuracy against fusion speed")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())


def _draw(image: np.ndarray, truth: np.ndarray, predicted: np.ndarray, title: str, size: int) -> np.ndarray:
    image = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    scale = size / max(image.shape[:2])
    image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    for boxes, colour in ((truth, (0, 200, 0)), (predicted, (0, 0, 255))):
        for x1, y1, x2, y2 in np.asarray(boxes).reshape(-1, 4) * scale:
            cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), colour, 1)
    canvas = np.zeros((size + 20, size, 3), np.uint8)
    canvas[20 : 20 + image.shape[0], : image.shape[1]] = image
    cv2.putText(canvas, title, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def plot_examples(
    path: Path,
    columns: List[Dict],
    ground_truth: Dict,
    *,
    examples: int = 3,
    score: float = 0.25,
    size: int = 256,
) -> None:
    """Grid: one row per validation image (the first ``examples`` ids), one column per entry of
    ``columns`` (``{"title", "images": {id: path}, "predictions": COCO records or None}``).
    True boxes green, predictions with score >= ``score`` red."""
    chosen = ground_truth["images"][:examples]
    truth = {entry["id"]: [] for entry in chosen}
    for annotation in ground_truth["annotations"]:
        if annotation["image_id"] in truth:
            x, y, w, h = annotation["bbox"]
            truth[annotation["image_id"]].append([x, y, x + w, y + h])
    rows = []
    for entry in chosen:
        tiles = []
        for column in columns:
            predicted = [
                [r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]]
                for r in column.get("predictions") or []
                if r["image_id"] == entry["id"] and r["score"] >= score
            ]
            image = read_color(column["images"][entry["file_name"]])
            tiles.append(_draw(image, np.asarray(truth[entry["id"]]), np.asarray(predicted), column["title"], size))
        rows.append(np.hstack(tiles))
    if rows:
        write_image_atomic(path, np.vstack(rows))


def write_report(out: Path, results: Dict, examples: Optional[Dict] = None) -> Dict[str, Path]:
    """Write every output of a comparison into ``out``; ``examples`` is plot_examples' arguments."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json", "csv": out / "results.csv", "markdown": out / "report.md",
        "figure": out / "map_vs_time.png", "examples": out / "examples.png",
    }
    write_text_atomic(paths["json"], json.dumps(results, indent=2) + "\n")
    write_csv(paths["csv"], results["methods"])
    plot_map_vs_time(paths["figure"], results["methods"])
    figures = [paths["figure"].name]
    if examples:
        plot_examples(paths["examples"], **examples)
        figures.append(paths["examples"].name)
    write_text_atomic(paths["markdown"], markdown(results, figures))
    return paths
