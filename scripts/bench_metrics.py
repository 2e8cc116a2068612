#!/usr/bin/env python3
"""Benchmark the fusion metrics on one 1280x1024 pair on ONE CPU core.

Reports the median wall and CPU time of every metric, of all twelve in one call, and of a
straightforward ``scipy.signal.convolve2d`` VIF (the widely used Python evaluator's way) in
the same run, with the speed-up. Uses an LLVIP sample pair from ../shared when present
(``MMDRFUSE_SHARED`` overrides the location), else a synthetic random-texture pair. Medians,
because the machine may be shared.

    python3 scripts/bench_metrics.py [--repeats 15] [--baseline-repeats 3] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from mmdrfuse.data.io import read_gray
from mmdrfuse.files import write_text_atomic
from mmdrfuse.metrics import ALL_METRICS, METRICS, evaluate_batch

# The straightforward convolve2d VIF of the tests' reference is the baseline timed here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_metrics import vifp  # noqa: E402

SHARED = Path(os.environ.get("MMDRFUSE_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def load_pair() -> tuple[str, np.ndarray, np.ndarray]:
    root = SHARED / "datasets" / "LLVIP-samples"
    for ir_path in sorted((root / "infrared").rglob("*.jpg")):
        vi_path = root / "visible" / ir_path.relative_to(root / "infrared")
        if vi_path.is_file():
            ir, vi = read_gray(ir_path), read_gray(vi_path)
            if ir.shape == vi.shape == (1024, 1280):
                return str(ir_path.relative_to(SHARED)), ir, vi
    rng = np.random.default_rng(0)

    def texture(blur: float) -> np.ndarray:
        noise = cv2.GaussianBlur(rng.random((1024, 1280)) * 255, (0, 0), blur)
        return np.clip((noise - noise.mean()) * 8 + 128, 0, 255).round().astype(np.uint8)

    return "synthetic random texture", texture(2.0), texture(4.0)


def measure(function, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``function()`` over ``repeats`` runs (after one warm-up)."""
    function()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--baseline-repeats", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    source, ir, vi = load_pair()
    fused = ((ir.astype(np.float64) + vi) / 2).round()  # an average fusion, rounded like a saved image
    f, a, b = (torch.from_numpy(image.astype(np.float64))[None, None] for image in (fused, ir, vi))
    print(f"pair: {source} ({ir.shape[1]}x{ir.shape[0]}), 1 thread, median of {args.repeats}")

    per_metric = {}
    with torch.no_grad():
        for name in ALL_METRICS:
            per_metric[name] = measure(lambda: METRICS[name](f, a, b), args.repeats)
            print(f"  {name:5s} wall {per_metric[name][0] * 1e3:8.1f} ms   cpu {per_metric[name][1] * 1e3:8.1f} ms")
    all_wall, all_cpu = measure(lambda: evaluate_batch(f, a, b), args.repeats)
    print(f"  all {len(ALL_METRICS)}: wall {all_wall * 1e3:.1f} ms   cpu {all_cpu * 1e3:.1f} ms  (target <= 150 ms)")

    fused64, ir64, vi64 = (image.astype(np.float64) for image in (fused, ir, vi))
    base_wall, base_cpu = measure(lambda: vifp(ir64, fused64) + vifp(vi64, fused64), args.baseline_repeats)
    check = abs(vifp(ir64, fused64) + vifp(vi64, fused64) - float(METRICS["VIF"](f, a, b)[0]))
    speedup = base_cpu / per_metric["VIF"][1]
    print(f"  convolve2d VIF: wall {base_wall:.2f} s   cpu {base_cpu:.2f} s   -> VIF {speedup:.0f}x faster (|diff| {check:.1e})")

    if args.json:
        result = {
            "pair": source,
            "size": list(ir.shape),
            "threads": 1,
            "repeats": args.repeats,
            "median_wall_s": {name: times[0] for name, times in per_metric.items()},
            "median_cpu_s": {name: times[1] for name, times in per_metric.items()},
            "all_metrics_wall_s": all_wall,
            "all_metrics_cpu_s": all_cpu,
            "baseline_convolve2d_vif_wall_s": base_wall,
            "baseline_convolve2d_vif_cpu_s": base_cpu,
            "vif_speedup_cpu": speedup,
            "vif_abs_difference": check,
        }
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
