"""From one detector result per method and training seed to the comparison's figures: means and
standard deviations over seeds, COCO fields, the miss rate, bootstrap intervals, the paired
comparisons and the sentences a reader gets (``report.py`` writes them out)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mmdrfuse.detection.matching import match_coco
from mmdrfuse.detection.methods import SINGLE_MODALITIES
from mmdrfuse.detection.statistics import bootstrap, method_map, seed_table
from mmdrfuse.errors import DataError

MEANS = ("map50_95", "map50", "precision", "recall", "map50_95_coco", "map50_coco", "lamr", "train_seconds")
COCO_FIELDS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")


def _load(value):
    """A saved JSON file by path, or the value itself."""
    if not isinstance(value, (str, Path)):
        return value
    try:
        return json.loads(Path(value).read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read the saved detector output {value}: {error}") from None


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def pairs_to_compare(points: Dict[str, float]) -> List[Tuple[str, str, str]]:
    """``(fused method, reference, role)``: each fused method against the best single modality and
    against the best method (by ``points``), without repeats or self-comparisons."""
    singles = [n for n in points if n in SINGLE_MODALITIES]
    fused = [n for n in points if n not in SINGLE_MODALITIES]
    references = []
    if singles:
        references.append((max(singles, key=points.get), "the best single modality"))
    best = max(points, key=points.get)
    if not references or references[0][0] != best:
        references.append((best, "the best method"))
    return [(name, reference, role) for name in fused for reference, role in references if reference != name]


def summarise(
    runs: Dict[str, List[Dict]],
    *,
    fusion_ms: Optional[Dict[str, Optional[float]]] = None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Dict:
    """The results dict of a comparison, less its ``protocol`` (the caller adds it).

    ``runs``: ``{method: [result per training seed]}``, each result as ``train_detector`` returns
    it: ``map50_95, map50, precision, recall, map50_95_coco, map50_coco, lamr, coco`` (pycocotools'
    ``STATS``), ``seed``, ``protocol``, ``train_seconds``, and ``predictions`` / ``ground_truth``
    (paths to the saved COCO JSON, or the lists/dicts themselves). Every method and seed must be
    validated on the same images (matched by file stem). ``fusion_ms``: ms per image per method
    (None for the single modalities and user folders).

    Returns ``{"methods": {name: {...}}, "comparisons": [...], "sentences": [...], "seeds": [...],
    "bootstrap": {"resamples", "level", "seed"}}``. Per method: the means over seeds of ``MEANS``,
    ``map50_95_std`` (ultralytics' mAP@.5:.95 over seeds; None for one seed), ``map50_95_ci``
    (percentile interval at ``level`` of COCO mAP@.5:.95, images resampled with every seed's
    predictions, the same ``resamples`` for every method), ``map50_95_boot`` (its point: the mean
    over seeds of pycocotools' AP), ``coco`` (means of ``COCO_FIELDS``), ``seeds``, ``per_seed``,
    ``protocol`` (the first seed's), ``fusion_ms_per_image``. ``comparisons``: ``{a, b, diff, ci,
    significant, b_is}`` for ``pairs_to_compare`` (diff of the COCO mAP@.5:.95 points; significant:
    the paired interval excludes 0; ``b_is``: "the best single modality" or "the best method").
    """
    if not runs or any(not seeds for seeds in runs.values()):
        raise ValueError("summarise needs at least one result per method")
    fusion_ms = fusion_ms or {}
    tables, methods = {}, {}
    for name, results in runs.items():
        per_seed = []
        for result in results:
            gt = _load(result["ground_truth"])
            images = sorted(image["file_name"] for image in gt["images"])
            per_seed.append(seed_table(match_coco(gt, _load(result["predictions"])), images))
        tables[name] = per_seed
        values = {key: _mean([r.get(key) for r in results]) for key in MEANS}
        maps = [r["map50_95"] for r in results]
        methods[name] = {
            **values,
            "map50_95_std": float(np.std(maps, ddof=1)) if len(maps) > 1 else None,
            "coco": {key: _mean([(r.get("coco") or {}).get(key) for r in results]) for key in COCO_FIELDS},
            "seeds": [r.get("seed") for r in results],
            "per_seed": [{k: r.get(k) for k in ("seed", "map50_95", "map50_95_coco", "lamr")} for r in results],
            "protocol": results[0].get("protocol"),
            "fusion_ms_per_image": fusion_ms.get(name),
        }
    n_images = len(next(iter(tables.values()))[0].images)
    points = {name: float(method_map(seeds, np.ones((1, n_images)))[0]) for name, seeds in tables.items()}
    pairs = pairs_to_compare(points)
    result = bootstrap(tables, [(a, b) for a, b, _ in pairs], resamples=resamples, seed=seed, level=level)
    for comparison, (_, _, role) in zip(result["comparisons"], pairs):
        comparison["b_is"] = role
    for name, interval in result["methods"].items():
        methods[name]["map50_95_boot"] = interval["map50_95"]
        methods[name]["map50_95_ci"] = interval["ci"]
    seeds = sorted({s for m in methods.values() for s in m["seeds"]}, key=str)
    fewest = min(len(m["seeds"]) for m in methods.values())
    return {
        "methods": methods,
        "comparisons": result["comparisons"],
        "sentences": comparison_sentences(result["comparisons"], n_seeds=fewest, level=level),
        "seeds": seeds,
        "bootstrap": {"resamples": resamples, "level": level, "seed": seed},
    }


def comparison_sentences(comparisons: Sequence[Dict], *, n_seeds: int, level: float = 0.95) -> List[str]:
    """One sentence per comparison, claiming only what its interval supports, and the caveat of
    a single seed (``n_seeds``: the fewest seeds of any method)."""
    percent = f"{100 * level:g}%"
    lines = []
    for c in comparisons:
        low, high = c["ci"]
        b = f"{c['b']} ({c['b_is']})" if c.get("b_is") else c["b"]
        if c["significant"]:
            # "beats by d [lo, hi]" or "is below by -d [-hi, -lo]": the gap and its interval, both positive
            verb, gap, interval = ("beats", c["diff"], (low, high)) if c["diff"] > 0 else ("is below", -c["diff"], (-high, -low))
            lines.append(f"{c['a']} {verb} {b} by {gap:.3f} [{interval[0]:.3f}, {interval[1]:.3f}] mAP@.5:.95 "
                         f"({percent} paired bootstrap interval).")
        else:
            lines.append(f"{c['a']} and {b} are not distinguishable: difference {c['diff']:+.3f}, "
                         f"{percent} paired interval [{low:+.3f}, {high:+.3f}] contains 0.")
    if n_seeds == 1:
        lines.append("One training seed: the intervals cover the choice of validation images, not the training "
                     "noise of the detector, and one seed cannot separate small differences (use several seeds).")
    return lines
