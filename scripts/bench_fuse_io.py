"""Is ``mmdrfuse fuse`` bound by image I/O? Wall time of a folder run against only reading the
inputs and writing same-size PNGs (same thread pool), target ratio <= 1.5.

    python3 scripts/bench_fuse_io.py --ir DIR --vi DIR --weights FILE [--model student] [--device cpu]
    python3 scripts/bench_fuse_io.py --synthetic 50x640x512 --model student   # no data needed (random weights)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from mmdrfuse.config import defaults
from mmdrfuse.data.io import match_pairs, read_gray, write_image_atomic
from mmdrfuse.fusion.infer import fuse_folder
from mmdrfuse.fusion.networks import build_model


def io_only(ir_dir, vi_dir, out_dir, workers):
    pairs, _ = match_pairs(ir_dir, vi_dir)

    def one(pair):
        stem, ir_path, vi_path = pair
        ir, _ = read_gray(ir_path), read_gray(vi_path)
        write_image_atomic(Path(out_dir) / f"{stem}.png", ir)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, pairs))
    return time.perf_counter() - start


def synthetic(root: Path, spec: str):
    count, width, height = (int(v) for v in spec.split("x"))
    rng = np.random.default_rng(0)
    for name, channels in (("ir", 1), ("vi", 3)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            coarse = rng.integers(0, 256, (height // 8, width // 8, channels), dtype=np.uint8)
            image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(root / name / f"{i:06d}.jpg"), image)
    return root / "ir", root / "vi"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ir")
    parser.add_argument("--vi")
    parser.add_argument("--synthetic", help="COUNTxWIDTHxHEIGHT random JPEG pairs instead of --ir/--vi")
    parser.add_argument("--model", default="student")
    parser.add_argument("--weights", help="default: seeded random weights (timing does not depend on them)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="bench-fuse-"))
    try:
        if args.synthetic:
            ir_dir, vi_dir = synthetic(scratch / "data", args.synthetic)
        else:
            ir_dir, vi_dir = args.ir, args.vi
        weights = args.weights
        if weights is None:
            torch.manual_seed(0)
            weights = scratch / f"{args.model}.pth"
            torch.save(build_model(args.model).state_dict(), weights)
        workers = max(2, min(8, os.cpu_count() or 2))
        io_times, fuse_results = [], []
        for _ in range(args.repeats):
            io_times.append(io_only(ir_dir, vi_dir, scratch / "io", workers))
            settings = {**defaults("fuse"), "model": args.model, "weights": weights, "device": args.device,
                        "engine": args.engine, "batch": args.batch}
            fuse_results.append(fuse_folder(**settings, ir_dir=ir_dir, vi_dir=vi_dir, out_dir=scratch / "fused",
                                            progress=False))
        best = min(fuse_results, key=lambda r: r["wall_seconds"])
        report = {
            "model": args.model, "device": best["device"], "engine": best["engine"], "pairs": best["n"],
            "io_only_s": min(io_times), "fuse_wall_s": best["wall_seconds"], "network_s": best["seconds"],
            "ratio": best["wall_seconds"] / min(io_times), "cpus": os.cpu_count(),
        }  # fmt: skip
        print(json.dumps(report))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
