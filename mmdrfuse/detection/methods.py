"""The image folder each fusion method contributes to the detection comparison.

A method is a folder of images, one per LLVIP id of the subset (stem = id): the user's own
(``--method NAME=DIR``) or one the project makes here:

- ``infrared``, ``visible``: the single modalities, gray (BGR2GRAY, as every fused image is);
- ``average``, ``max``, ``laplacian``: the classical baselines of mmdrfuse.fusion.classical;
- ``student``, ``teacher``: the MMDRFuse networks, through mmdrfuse.fusion.infer.fuse_folder.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from tqdm import tqdm

from mmdrfuse.data.io import read_gray, write_image_atomic
from mmdrfuse.data.llvip import LLVIPPair, list_pairs, read_pair
from mmdrfuse.errors import DataError
from mmdrfuse.fusion.classical import CLASSICAL_METHODS

SINGLE_MODALITIES = ("infrared", "visible")
NETWORK_METHODS = ("student", "teacher")
BUILTIN_METHODS = SINGLE_MODALITIES + tuple(CLASSICAL_METHODS) + NETWORK_METHODS
# A method name becomes a folder name under --out: no separators, no leading dot ("..", ".hidden").
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def parse_method(text: str) -> tuple:
    """``NAME=DIR`` -> ``(NAME, Path(DIR))``; the folder must exist."""
    name, sep, folder = text.partition("=")
    name = name.strip()
    if not sep or not name or not folder:
        raise DataError(f"--method expects NAME=DIR, got {text!r}")
    if not PLAIN_NAME.fullmatch(name):
        raise DataError(f"--method {text!r}: NAME must be a plain name (letters, digits, _ . + -, not starting "
                        f"with a dot): it names folders under --out")
    if not Path(folder).is_dir():
        raise DataError(f"--method {name}: folder does not exist: {folder}")
    return name, Path(folder)


def parse_builtins(text: Optional[str]) -> List[str]:
    """``"infrared,visible,max"`` -> the list, each checked against BUILTIN_METHODS."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILTIN_METHODS]
    if unknown:
        raise DataError(f"unknown built-in method(s) {', '.join(unknown)}; choose from {', '.join(BUILTIN_METHODS)}")
    return names


def subset_pairs(root: Path, ids: Iterable[str]) -> List[LLVIPPair]:
    """The LLVIP pairs of ``ids``, looked up in both official splits."""
    by_id: Dict[str, LLVIPPair] = {}
    for split in ("train", "test"):
        if (Path(root) / "infrared" / split).is_dir():
            by_id.update({pair.id: pair for pair in list_pairs(root, split)})
    ids = list(ids)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(f"{len(missing)} id(s) of the subset are not pairs of {root}, e.g. {missing[0]}")
    return [by_id[i] for i in ids]


def make_method_images(
    name: str,
    pairs: List[LLVIPPair],
    out_dir: Path,
    *,
    weights: Optional[Path] = None,
    device: str = "auto",
    scaling: str = "minmax",
    batch: int = 8,
    progress: bool = True,
) -> Optional[float]:
    """Write ``out_dir/<id>.png`` for every pair with built-in method ``name``; returns the fusion
    time in milliseconds per image (compute only, no file I/O), None for a single modality."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if name in NETWORK_METHODS:
        if weights is None:
            raise DataError(f"built-in method {name!r} needs --{name}-weights PATH (no {name} weights ship yet)")
        from mmdrfuse.config import defaults
        from mmdrfuse.fusion.infer import fuse_folder

        # One run over both splits: fuse_folder replaces its output folder as a whole.
        timing = fuse_folder(
            **{**defaults("fuse"), "model": name, "weights": weights, "device": device, "scaling": scaling,
               "color": "gray", "batch": batch}, pairs=[(pair.id, pair.ir, pair.vi) for pair in pairs],
            out_dir=out_dir, progress=progress,
        )
        return 1000.0 * float(timing["seconds"]) / max(int(timing["n"]), 1)

    seconds = 0.0
    for pair in tqdm(pairs, desc=name, unit="img", disable=not progress):
        if name in SINGLE_MODALITIES:
            image = read_gray(pair.ir if name == "infrared" else pair.vi)
        elif name in CLASSICAL_METHODS:
            ir, vi = read_pair(pair)
            start = time.perf_counter()
            image = CLASSICAL_METHODS[name](ir, vi)
            seconds += time.perf_counter() - start
        else:
            raise DataError(f"unknown built-in method {name!r}; choose from {', '.join(BUILTIN_METHODS)}")
        write_image_atomic(out_dir / f"{pair.id}.png", image)
    return None if name in SINGLE_MODALITIES else 1000.0 * seconds / max(len(pairs), 1)
