"""The comparison report: results.json, results.csv, report.md, the paper's Figure 8
(mAP@.5:.95 against fusion time, ``map_vs_time.png``, with interval error bars) and a grid of
validation examples with true and predicted boxes (``examples.png``). Every file is written
atomically. ``results`` is ``summary.summarise(...)`` plus ``"protocol"`` (or, without the
summary's fields, the one-seed table of before)."""
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

# results.csv: one row per method; a field a results dict does not have is left blank.
COLUMNS = (
    "map50_95", "map50_95_std", "map50_95_boot", "map50_95_ci_low", "map50_95_ci_high", "map50", "precision", "recall",
    "map50_95_coco", "map50_coco", "AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "lamr", "seeds",
    "fusion_ms_per_image", "train_seconds",
)
DETECTOR = ("ultralytics YOLOv5u ({model}: ultralytics' YOLOv5 with the anchor-free, decoupled head of YOLOv8, "
            "not the original anchor-based YOLOv5 the paper used; absolute mAP is not comparable with the paper's)")


def _flat(values: Dict) -> Dict:
    """A method's results with the interval and the COCO fields as columns of their own."""
    row = {**values, **(values.get("coco") or {})}
    if values.get("map50_95_ci"):
        row["map50_95_ci_low"], row["map50_95_ci_high"] = values["map50_95_ci"]
    if isinstance(values.get("seeds"), list):
        row["seeds"] = " ".join(str(s) for s in values["seeds"])
    return row


# The table of a results dict without the summary's fields (one seed, no intervals).
OLD_COLUMNS = (
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


def protocol_sentence(protocol: Optional[Dict], epochs) -> str:
    """What ultralytics did with mosaic, warm-up and AMP in this run (``yolo_train.effective_protocol``)."""
    if not protocol:
        return ""
    return (f"Augmentation and schedule: mosaic (p {protocol['mosaic']:g}) in {protocol['mosaic_epochs']} of {epochs} "
            f"epochs (ultralytics closes it for the last close_mosaic = {protocol['close_mosaic']} epochs), "
            f"warm-up {protocol['warmup_epochs_used']:g} epochs (warmup_epochs {protocol['warmup_epochs']:g}, capped at "
            f"epochs - 1), AMP {'on' if protocol['amp_used'] else 'off'}.")


def _interval(values: Dict) -> str:
    if not values.get("map50_95_ci"):
        return "-"
    low, high = values["map50_95_ci"]
    return f"{values['map50_95_boot']:.3f} [{low:.3f}, {high:.3f}]"


def _mean_std(values: Dict) -> str:
    std = values.get("map50_95_std")
    return _cell(values.get("map50_95")) + ("" if std is None else f" ± {std:.3f}")


def _summary_table(methods: Dict[str, Dict], order: List[str], level: float) -> List[str]:
    headers = ["mAP@.5:.95 (ultralytics, mean ± std over seeds)", f"COCO mAP@.5:.95 [{100 * level:g}% interval]",
               "AP50", "AP75", "APs", "APm", "APl", "AR100", "LAMR", "fusion ms/image", "detector training s"]
    lines = ["| method | " + " | ".join(headers) + " |", "| --- " * (len(headers) + 1) + "|"]
    for name in order:
        values = methods[name]
        coco = values.get("coco") or {}
        cells = [_mean_std(values), _interval(values)] + [_cell(coco.get(k)) for k in ("AP50", "AP75", "APs", "APm", "APl", "AR100")]
        cells += [_cell(values.get(k)) for k in ("lamr", "fusion_ms_per_image", "train_seconds")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(results: Dict, figures: Sequence[str]) -> str:
    methods, protocol = results["methods"], results["protocol"]
    summarised = "comparisons" in results
    key = "map50_95_boot" if summarised else "map50_95"
    order = sorted(methods, key=lambda n: methods[n][key], reverse=True)
    start = protocol.get("weights") or "random initialisation"
    if protocol.get("warm_start"):
        start = (f"a warm-start detector ({protocol['warm_start'].get('epochs')} epochs on separate synthetic scenes, "
                 f"each shown as infrared or visible: {start})")
    seeds = results.get("seeds") or [protocol.get("seed")]
    lines = [
        "# Fuse-then-detect comparison",
        "",
        f"Data: {protocol.get('data')}"
        + (" (SYNTHETIC scenes from mmdrfuse.data.synthetic, not LLVIP)." if protocol.get("synthetic_data") else "."),
        "",
        f"Detector: {DETECTOR.format(model=protocol.get('model'))}, from {start}, "
        f"{protocol.get('epochs')} epochs, batch {protocol.get('batch')}, {protocol.get('optimizer')}, "
        f"image size {protocol.get('imgsz')}, training seed(s) {', '.join(str(s) for s in seeds)}; "
        f"{protocol.get('train_images')} training and {protocol.get('val_images')} validation images, "
        "the same ids for every method.",
        "",
    ]
    first_protocol = next((m.get("protocol") for m in methods.values() if m.get("protocol")), None)
    if first_protocol:
        lines += [protocol_sentence(first_protocol, protocol.get("epochs")), ""]
    if summarised:
        level = results.get("bootstrap", {}).get("level", 0.95)
        lines += [f"- {sentence}" for sentence in results["sentences"]] or ["- No fused method to compare."]
        lines += [""] + _summary_table(methods, order, level) + [
            "",
            "Every figure is from the predictions ultralytics' validator made (predictions.json per method and "
            "seed): its own mAP, then pycocotools on the same predictions (COCO AP and AP50/AP75/size-split "
            f"AP/AR100, at most 100 detections per image) and LLVIP's log-average miss rate (FPPI 1e-2..1, "
            f"IoU .5; lower is better). The intervals resample the validation images "
            f"({results['bootstrap']['resamples']} resamples, the same for every method, every seed's predictions "
            "on each drawn image counting; a method's value is the mean over its seeds); the comparisons use paired "
            "intervals of the difference on those resamples. An interval covers the choice of validation images for "
            "these detectors; their training noise shows in the ± over seeds. On the same predictions ultralytics' "
            "and COCO's mAP@.5:.95 differ by a few thousandths: ultralytics matches boxes before clipping them to "
            "the image (the saved boxes are clipped, as in its own COCO export) and integrates the precision with "
            "the trapezoid rule where COCO averages 101 points. Fusion time is compute only (no file I/O) "
            f"on device '{protocol.get('device', 'auto')}'.",
            "",
        ]
    else:
        lines += [
            fused_vs_single_sentence(methods),
            "",
            "| method | " + " | ".join(HEADERS) + " |",
            "| --- " * (len(HEADERS) + 1) + "|",
        ]
        for name in order:
            lines.append(f"| {name} | " + " | ".join(_cell(methods[name].get(k)) for k in OLD_COLUMNS) + " |")
        lines += [
            "",
            "mAP from ultralytics' validator; the pycocotools columns re-score its predictions "
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
        row = _flat(values)
        writer.writerow((name,) + tuple("" if row.get(k) is None else row.get(k) for k in COLUMNS))
    write_text_atomic(path, buffer.getvalue())


def plot_map_vs_time(path: Path, methods: Dict[str, Dict]) -> None:
    """Figure 8 of the paper: one point per fusion method; single modalities as horizontal lines.
    With the summary's fields: COCO mAP@.5:.95 with its bootstrap interval as error bars (and as
    a band around each single modality's line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_ci = all(m.get("map50_95_ci") for m in methods.values())
    key = "map50_95_boot" if with_ci else "map50_95"
    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    timed = {n: m for n, m in methods.items() if m.get("fusion_ms_per_image") is not None}
    for name, values in timed.items():
        x, y = values["fusion_ms_per_image"], values[key]
        if with_ci:
            low, high = values["map50_95_ci"]
            axes.errorbar(x, y, yerr=[[max(0.0, y - low)], [max(0.0, high - y)]], fmt="o", capsize=3)
        else:
            axes.scatter(x, y, s=40)
        axes.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4))
    for name, values in methods.items():
        if values.get("fusion_ms_per_image") is None:
            axes.axhline(values[key], linestyle="--", linewidth=1, color="gray")
            if with_ci:
                axes.axhspan(*values["map50_95_ci"], color="gray", alpha=0.12, linewidth=0)
            axes.annotate(name, (0.99, values[key]), xycoords=("axes fraction", "data"), textcoords="offset points",
                          xytext=(0, 3), color="gray", ha="right")
    if timed and all(v["fusion_ms_per_image"] > 0 for v in timed.values()):
        axes.set_xscale("log")
    axes.set_xlabel("fusion time per image (ms)")
    axes.set_ylabel("COCO mAP@.5:.95 (95% interval)" if with_ci else "mAP@.5:.95")
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
