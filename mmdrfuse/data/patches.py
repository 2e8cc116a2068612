"""Training patches: the paper's recipe and a store the trainer reads fast.

Recipe (MMDRFuse section 4.1): 200 LLVIP pairs, gray (``cv2.COLOR_BGR2GRAY``), cut into
non-overlapping ``size`` x ``size`` patches with stride ``stride``; a patch starts at every
``(y, x)`` with ``y = k * stride``, ``y + size <= H`` (and likewise for x), so a 1280x1024
image gives ``10 * 8 = 80`` patches of 128 and 200 pairs give 16,000.

Store layout (one folder, built atomically)::

    ir.npy, vi.npy   uint8 (N, size, size), loaded memory-mapped
    index.csv        patch, name, id, y, x   (patch -> source pair and top-left corner)
    meta.json        recipe, seed, chosen ids, counts
    ir/, vi/         optional same-named PNGs (--export-images)
"""
from __future__ import annotations

import csv
import io as text_io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from mmdrfuse.data.io import (
    PathLike,
    check_output_outside_inputs,
    image_size,
    match_pairs,
    read_gray,
    write_image_staged,
)
from mmdrfuse.data.llvip import read_pair, validate
from mmdrfuse.errors import DataError
from mmdrfuse.files import atomic_directory, write_text_atomic

STORE_FORMAT = "mmdrfuse-patches/1"


@dataclass
class PatchSet:
    """Paired gray patches: ``ir`` and ``vi`` uint8 (N, H, W); ``names[i]`` names patch i."""

    ir: np.ndarray
    vi: np.ndarray
    names: List[str]

    def __post_init__(self) -> None:
        if self.ir.ndim != 3 or self.ir.shape != self.vi.shape or len(self.names) != len(self.ir):
            raise DataError(
                f"inconsistent patch set: ir {self.ir.shape}, vi {self.vi.shape}, {len(self.names)} names"
            )

    def __len__(self) -> int:
        return len(self.names)


def patch_grid(height: int, width: int, size: int, stride: int) -> List[Tuple[int, int]]:
    """Top-left corners ``(y, x)`` of the patches that fit entirely in the image, row-major."""
    if size <= 0 or stride <= 0:
        raise DataError(f"patch size and stride must be positive, got size={size}, stride={stride}")
    return [(y, x) for y in range(0, height - size + 1, stride) for x in range(0, width - size + 1, stride)]


def patch_name(pair_id: str, y: int, x: int) -> str:
    return f"{pair_id}_y{y:04d}_x{x:04d}"


def choose_pairs(ids: List[str], count: int, seed: int) -> List[str]:
    """``count`` ids drawn without replacement with ``numpy.random.default_rng(seed)``,
    returned sorted; all ids when ``count`` is not smaller than their number."""
    if count <= 0:
        raise DataError(f"--pairs must be positive, got {count}")
    if count >= len(ids):
        return sorted(ids)
    picked = np.random.default_rng(seed).choice(len(ids), size=count, replace=False)
    return sorted(ids[i] for i in picked)


def prepare_patches(
    root: PathLike,
    *,
    split: str = "train",
    pairs: int = 200,
    size: int = 128,
    stride: int = 128,
    seed: int = 0,
    out: PathLike,
    export_images: bool = False,
    strict: bool = False,
    progress: bool = True,
    log=print,
) -> Path:
    """Cut ``pairs`` seeded-random pairs of an LLVIP ``split`` into a patch store at ``out``.

    Bad pairs (no partner, size mismatch, unreadable) are skipped and counted, or with
    ``strict`` stop the build. Returns ``out``.
    """
    out = Path(out)
    check_output_outside_inputs(out, root)
    report = validate(root, split, strict=strict, annotations=False)
    if report.problems:
        log(f"skipping {report.skipped} bad pair(s) of {report.checked} ({len(report.problems)} problem(s)); "
            f"first: {report.problems[0][0]}: {report.problems[0][1]}")
    by_id = {pair.id: pair for pair in report.ok}
    if not by_id:
        raise DataError(f"no usable {split} pair in {root}")
    chosen = choose_pairs(sorted(by_id), pairs, seed)
    if pairs > len(by_id):
        log(f"only {len(by_id)} usable {split} pairs in {root} (asked for {pairs}): taking all of them")

    grids = {}
    for pair_id in chosen:
        width, height = image_size(by_id[pair_id].ir)
        grids[pair_id] = ((height, width), patch_grid(height, width, size, stride))
    total = sum(len(grid) for _, grid in grids.values())
    if total == 0:
        raise DataError(f"no {size}x{size} patch fits in the chosen images of {root}")

    with atomic_directory(out) as staging:
        ir_store = np.lib.format.open_memmap(staging / "ir.npy", mode="w+", dtype=np.uint8, shape=(total, size, size))
        vi_store = np.lib.format.open_memmap(staging / "vi.npy", mode="w+", dtype=np.uint8, shape=(total, size, size))
        rows = []
        iterator = chosen
        if progress:
            from tqdm import tqdm

            iterator = tqdm(chosen, desc="patches", unit="pair")
        for pair_id in iterator:
            ir, vi = read_pair(by_id[pair_id])
            header_shape, grid = grids[pair_id]
            if ir.shape != header_shape:
                raise DataError(f"decoded size {ir.shape[::-1]} differs from the header's: {by_id[pair_id].ir}")
            for y, x in grid:
                index = len(rows)
                ir_store[index] = ir[y : y + size, x : x + size]
                vi_store[index] = vi[y : y + size, x : x + size]
                name = patch_name(pair_id, y, x)
                rows.append((index, name, pair_id, y, x))
                if export_images:
                    write_image_staged(staging / "ir" / f"{name}.png", ir_store[index])
                    write_image_staged(staging / "vi" / f"{name}.png", vi_store[index])
        ir_store.flush()
        vi_store.flush()
        del ir_store, vi_store

        table = text_io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(("patch", "name", "id", "y", "x"))
        writer.writerows(rows)
        write_text_atomic(staging / "index.csv", table.getvalue())
        meta = {
            "format": STORE_FORMAT,
            "count": total,
            "shape": [total, size, size],
            "recipe": {
                "source": "LLVIP",
                "root": str(Path(root).resolve()),
                "split": split,
                "pairs_requested": pairs,
                "pairs_used": len(chosen),
                "pairs_available": len(by_id),
                "size": size,
                "stride": stride,
                "gray": "cv2.COLOR_BGR2GRAY",
                "selection": "numpy.random.default_rng(seed).choice without replacement over sorted ids",
            },
            "seed": seed,
            "ids": chosen,
            "skipped_pairs": report.skipped,
            "images_exported": export_images,
        }
        write_text_atomic(staging / "meta.json", json.dumps(meta, indent=2) + "\n")
    log(f"{total} patch pairs of {size}x{size} from {len(chosen)} pairs -> {out}")
    return out


def load_patches(path: PathLike) -> PatchSet:
    """Open a patch store written by ``prepare_patches``; arrays are memory-mapped read-only."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise DataError(f"not a patch store (no meta.json; build one with `mmdrfuse prepare patches`): {path}")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta.get("format") != STORE_FORMAT:
        raise DataError(f"unknown patch store format {meta.get('format')!r} in {meta_file}")
    arrays = []
    for name in ("ir.npy", "vi.npy"):
        file = path / name
        if not file.is_file():
            raise DataError(f"patch store is missing {file}")
        try:
            array = np.load(file, mmap_mode="r")
        except ValueError as error:
            raise DataError(f"corrupt patch array {file}: {error}") from None
        if array.dtype != np.uint8 or list(array.shape) != meta["shape"]:
            raise DataError(f"{file} is {array.dtype} {array.shape}, meta.json says uint8 {tuple(meta['shape'])}")
        arrays.append(array)
    with open(path / "index.csv", encoding="utf-8", newline="") as handle:
        names = [row["name"] for row in csv.DictReader(handle)]
    if len(names) != meta["count"]:
        raise DataError(f"{path / 'index.csv'} lists {len(names)} patches, meta.json says {meta['count']}")
    return PatchSet(arrays[0], arrays[1], names)


def load_patch_folders(ir_dir: PathLike, vi_dir: PathLike) -> PatchSet:
    """Read same-named gray patches from two folders (all of one size) into memory."""
    pairs, _ = match_pairs(ir_dir, vi_dir)
    ir_images, vi_images, names = [], [], []
    shape: Optional[Tuple[int, int]] = None
    first: Optional[Path] = None
    for stem, ir_path, vi_path in pairs:
        for path, images in ((ir_path, ir_images), (vi_path, vi_images)):
            image = read_gray(path)
            if shape is None:
                shape, first = image.shape, path
            elif image.shape != shape:
                raise DataError(
                    f"patches must all have one size: {path} is {image.shape[1]}x{image.shape[0]} "
                    f"but {first} is {shape[1]}x{shape[0]}"
                )
            images.append(image)
        names.append(stem)
    return PatchSet(np.stack(ir_images), np.stack(vi_images), names)


def open_patches(path: PathLike, vi_dir: Optional[PathLike] = None) -> PatchSet:
    """A patch store folder, or with ``vi_dir`` a pair of image folders (``path`` = infrared)."""
    if vi_dir is not None:
        return load_patch_folders(path, vi_dir)
    return load_patches(path)
