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
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from mmdrfuse.data.io import (
    DepthRange,
    PathLike,
    check_output_outside_inputs,
    check_same_size,
    image_size,
    match_pairs,
    parse_depth_range,
    read_checked,
    read_gray,
    write_image_staged,
)
from mmdrfuse.data.llvip import validate
from mmdrfuse.errors import DataError
from mmdrfuse.files import atomic_directory, check_output_folder, write_text_atomic

STORE_FORMAT = "mmdrfuse-patches/1"
COMMAND = "prepare patches"
# Free space kept beyond the store's own size: a full disk makes writes into a memory map die with SIGBUS.
SPARE_BYTES = 64 * 2 ** 20


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
    split: str,
    pairs: int,
    size: int,
    stride: int,
    seed: int,
    depth_range: DepthRange,
    strict: bool,
    out: PathLike,
    export_images: bool = False,
    progress: bool = True,
    overwrite: bool = True,
    log=print,
) -> Path:
    """Cut ``pairs`` seeded-random pairs of an LLVIP ``split`` into a patch store at ``out``.

    The settings (``split`` to ``strict``) are the keys of the ``prepare_patches`` section of
    mmdrfuse/cfg/default.yaml, which holds their defaults (``mmdrfuse.config.defaults``).

    Bad pairs (no partner, size mismatch, unreadable headers, pixels that do not decode) are
    skipped and counted, or with ``strict`` stop the build. Images deeper than 8 bits are
    mapped by ``depth_range`` (mmdrfuse.data.io). The free disk space is checked before the
    memory maps are sized. An existing ``out`` is replaced only when it is an earlier output of
    this command and ``overwrite`` (else DataError). Returns ``out``.
    """
    out = Path(out)
    depth_range = parse_depth_range(depth_range)
    check_output_outside_inputs(out, root)
    check_output_folder(out, COMMAND, overwrite=overwrite)
    report = validate(root, split, strict=strict, annotations=False, decode=False)  # each chosen pair is decoded below
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

    check_free_space(out.parent, 2 * total * size * size * (2 if export_images else 1), what=f"{total} patch pairs")

    settings = {"root": str(Path(root).resolve()), "split": split, "pairs": pairs, "size": size, "stride": stride,
                "seed": seed, "export_images": export_images}
    with atomic_directory(out, command=COMMAND, settings=settings, overwrite=overwrite) as staging:
        ir_store = np.lib.format.open_memmap(staging / "ir.npy", mode="w+", dtype=np.uint8, shape=(total, size, size))
        vi_store = np.lib.format.open_memmap(staging / "vi.npy", mode="w+", dtype=np.uint8, shape=(total, size, size))
        rows = []
        bad: List[str] = []
        iterator = chosen
        if progress:
            from tqdm import tqdm

            iterator = tqdm(chosen, desc="patches", unit="pair")
        for pair_id in iterator:
            pair = by_id[pair_id]
            header_shape, grid = grids[pair_id]
            try:
                ir = read_checked(pair.ir, depth_range=depth_range)
                vi = read_checked(pair.vi, depth_range=depth_range)
                check_same_size(ir, vi, pair.ir, pair.vi)
                if ir.shape != header_shape:
                    raise DataError(f"decoded size {ir.shape[::-1]} differs from the header's: {pair.ir}")
            except DataError as error:
                if strict:
                    raise DataError(f"{error} (run without --strict to skip bad pairs)") from None
                bad.append(str(error))
                continue
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
        if bad:
            if not rows:
                raise DataError(f"no chosen pair of {root} decodes; first: {bad[0]}")
            log(f"skipped {len(bad)} pair(s) that do not decode; first: {bad[0]}")
            _shrink_store(staging, len(rows))
        used = sorted({row[2] for row in rows})
        total = len(rows)

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
                "pairs_used": len(used),
                "pairs_available": len(by_id),
                "size": size,
                "stride": stride,
                "gray": "cv2.COLOR_BGR2GRAY",
                "selection": "numpy.random.default_rng(seed).choice without replacement over sorted ids",
            },
            "seed": seed,
            "ids": used,
            "skipped_pairs": report.skipped + len(bad),
            "undecodable": bad,
            "images_exported": export_images,
        }
        write_text_atomic(staging / "meta.json", json.dumps(meta, indent=2) + "\n")
    log(f"{total} patch pairs of {size}x{size} from {len(used)} pairs -> {out}")
    return out


def check_free_space(folder: PathLike, needed: int, *, what: str) -> None:
    """DataError unless the filesystem of ``folder`` (or its nearest existing parent) has
    ``needed`` bytes free plus a margin."""
    folder = Path(folder).resolve()
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < needed + SPARE_BYTES:
        raise DataError(f"not enough free disk space in {folder} for {what}: need {(needed + SPARE_BYTES) / 2 ** 20:.0f} MiB, "
                        f"{free / 2 ** 20:.0f} MiB free")


def _shrink_store(staging: Path, count: int) -> None:
    """Rewrite ``ir.npy``/``vi.npy`` with their first ``count`` patches (pairs were skipped after sizing)."""
    for name in ("ir.npy", "vi.npy"):
        full = np.load(staging / name, mmap_mode="r")
        kept = np.lib.format.open_memmap(staging / f".{name}.tmp", mode="w+", dtype=np.uint8, shape=(count,) + full.shape[1:])
        kept[:] = full[:count]
        kept.flush()
        del kept, full
        os.replace(staging / f".{name}.tmp", staging / name)


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
