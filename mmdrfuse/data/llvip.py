"""The LLVIP dataset on disk: pairs of a split, VOC annotations, and a validation report.

Layout (as distributed)::

    ROOT/infrared/{train,test}/<id>.jpg    3-channel gray JPEG, 1280x1024
    ROOT/visible/{train,test}/<id>.jpg     colour JPEG, same size
    ROOT/Annotations/<id>.xml              VOC XML, class ``person``, pixel boxes

One annotation file serves both modalities of a pair. Ids are six-digit file stems.
"""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from mmdrfuse.data.io import (
    MAX_PIXELS,
    DepthRange,
    PathLike,
    check_same_size,
    decode_problem,
    image_size_and_depth,
    list_images,
    read_color,
    read_gray,
)
from mmdrfuse.errors import DataError

SPLITS = ("train", "test")
MODALITIES = {"ir": "infrared", "vi": "visible"}
ANNOTATIONS = "Annotations"


@dataclass
class LLVIPPair:
    id: str
    ir: Path
    vi: Path
    annotation: Optional[Path]  # None when Annotations/<id>.xml does not exist
    split: str = "train"


@dataclass
class Annotation:
    """A VOC annotation. ``width``/``height`` are 0 when the XML has no ``<size>``.

    ``boxes`` is float (K, 4) as ``xmin, ymin, xmax, ymax`` in pixels, one row per object,
    in the order of the file; ``labels`` holds the K object names.
    """

    width: int
    height: int
    boxes: np.ndarray
    labels: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        if len(self.labels) != len(self.boxes):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.labels)} labels")


def check_root(root: PathLike) -> Path:
    """Raise DataError unless ``root`` looks like an LLVIP folder (``infrared/`` and ``visible/``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"LLVIP root does not exist: {root}")
    missing = [name for name in MODALITIES.values() if not (root / name).is_dir()]
    if missing:
        raise DataError(f"not an LLVIP folder (no {' or '.join(missing)}/ inside): {root}")
    return root


def available_splits(root: PathLike) -> List[str]:
    """The official splits present in ``root`` with at least one image in either modality."""
    root = check_root(root)
    return [s for s in SPLITS if any(list_images(root / m / s, allow_empty=True) for m in MODALITIES.values())]


def _scan_split(root: Path, split: str) -> Tuple[List[LLVIPPair], List[Tuple[Path, str]]]:
    """Complete pairs of a split (sorted by id) and one problem per image without a partner."""
    if split not in SPLITS:
        raise DataError(f"unknown LLVIP split {split!r}; expected one of {', '.join(SPLITS)}")
    ir_dir, vi_dir = root / MODALITIES["ir"] / split, root / MODALITIES["vi"] / split
    ir_files, vi_files = list_images(ir_dir, allow_empty=True), list_images(vi_dir, allow_empty=True)
    problems = [(p, f"no visible partner in {vi_dir}") for s, p in ir_files.items() if s not in vi_files]
    problems += [(p, f"no infrared partner in {ir_dir}") for s, p in vi_files.items() if s not in ir_files]
    annotations = root / ANNOTATIONS
    pairs = []
    for stem in sorted(set(ir_files) & set(vi_files)):
        xml = annotations / f"{stem}.xml"
        pairs.append(LLVIPPair(stem, ir_files[stem], vi_files[stem], xml if xml.is_file() else None, split))
    return pairs, sorted(problems)


def list_pairs(root: PathLike, split: str) -> List[LLVIPPair]:
    """Pairs of ``split`` ("train" | "test") present in both modalities, sorted by id.

    Images without a partner are left out (``validate`` reports them). Raises DataError
    when the root is not an LLVIP folder or the split has no pair at all.
    """
    root = check_root(root)
    pairs, _ = _scan_split(root, split)
    if not pairs:
        raise DataError(
            f"no {split} pairs in {root} (expected images in {MODALITIES['ir']}/{split} and {MODALITIES['vi']}/{split})"
        )
    return pairs


def read_pair(pair: LLVIPPair, *, color: bool = False, depth_range: DepthRange = "minmax") -> Tuple[np.ndarray, np.ndarray]:
    """``(ir, vi)`` as uint8 gray (H, W) each (BGR2GRAY, the paper's protocol), or with
    ``color`` the infrared as gray (H, W) and the visible as BGR (H, W, 3). Sizes are checked;
    images deeper than 8 bits are mapped by ``depth_range`` (see mmdrfuse.data.io)."""
    ir = read_gray(pair.ir, depth_range)
    vi = read_color(pair.vi, depth_range) if color else read_gray(pair.vi, depth_range)
    check_same_size(ir, vi, pair.ir, pair.vi)
    return ir, vi


def _int_field(node: ElementTree.Element, tag: str, path: Path) -> int:
    text = node.findtext(tag)
    if text is None:
        raise DataError(f"malformed annotation {path}: <{node.tag}> has no <{tag}>")
    try:
        return int(round(float(text)))
    except ValueError:
        raise DataError(f"malformed annotation {path}: <{tag}> is {text.strip()!r}, not a number") from None


def read_annotation(path: PathLike) -> Annotation:
    """Parse a VOC XML file. Raises DataError naming the file when it is missing or malformed
    (not XML, an ``<object>`` without ``<name>`` or ``<bndbox>``, a non-numeric coordinate)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file does not exist: {path}")
    try:
        tree = ElementTree.parse(path)
    except ElementTree.ParseError as error:
        raise DataError(f"malformed annotation {path}: {error}") from None
    node = tree.getroot()
    if node.tag != "annotation":
        raise DataError(f"malformed annotation {path}: root element is <{node.tag}>, expected <annotation>")
    width = height = 0
    size = node.find("size")
    if size is not None and size.find("width") is not None and size.find("height") is not None:
        width, height = _int_field(size, "width", path), _int_field(size, "height", path)
    boxes, labels = [], []
    for obj in node.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"malformed annotation {path}: an <object> has no <name>")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"malformed annotation {path}: object {name!r} has no <bndbox>")
        boxes.append([_int_field(box, tag, path) for tag in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(name)
    return Annotation(width, height, np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels)


def size_problem(annotation: Annotation, width: int, height: int) -> Optional[str]:
    """A message when the XML ``<size>`` disagrees with the ``width`` x ``height`` image, else None."""
    if annotation.width and (annotation.width, annotation.height) != (width, height):
        return f"<size> says {annotation.width}x{annotation.height} but the image is {width}x{height}"
    return None


def box_problems(annotation: Annotation, width: int, height: int, *, check_size: bool = True) -> List[str]:
    """Messages for boxes that are empty (xmax <= xmin or ymax <= ymin) or leave the
    ``width`` x ``height`` image, and (``check_size``) for a ``<size>`` that disagrees with the image."""
    messages = []
    mismatch = size_problem(annotation, width, height) if check_size else None
    if mismatch:
        messages.append(mismatch)
    for index, (x0, y0, x1, y1) in enumerate(annotation.boxes):
        box = f"box {index} ({x0:g}, {y0:g}, {x1:g}, {y1:g})"
        if x1 <= x0 or y1 <= y0:
            messages.append(f"{box} is empty")
        elif x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            messages.append(f"{box} lies outside the {width}x{height} image")
    return messages


@dataclass
class ValidationReport:
    """``ok``: pairs that passed every check; ``problems``: ``(file, message)`` per problem
    (a pair can have several); ``checked``: pairs examined; ``splits``: splits examined."""

    root: Path
    splits: List[str]
    ok: List[LLVIPPair] = field(default_factory=list)
    problems: List[Tuple[Path, str]] = field(default_factory=list)
    checked: int = 0
    missing_annotations: int = 0
    annotations: bool = True
    decoded: bool = False
    depths: Counter = field(default_factory=Counter)  # bits per channel -> images

    @property
    def skipped(self) -> int:
        """Complete pairs left out of ``ok``."""
        return self.checked - len(self.ok)

    def summary(self) -> str:
        text = (
            f"{self.root} ({', '.join(self.splits) or 'no split'}): {self.checked} pairs checked, "
            f"{len(self.ok)} ok, {self.skipped} skipped, {len(self.problems)} problem(s)"
        )
        if self.missing_annotations:
            text += f", {self.missing_annotations} pair(s) without annotation"
        if self.depths:
            text += "; bit depth: " + ", ".join(f"{bits}-bit ({count} images)" for bits, count in sorted(self.depths.items()))
        text += "; pixels decoded" if self.decoded else "; headers only (--decode to decode every image)"
        return text

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "splits": self.splits,
            "annotations_checked": self.annotations,
            "checked": self.checked,
            "ok": len(self.ok),
            "skipped": self.skipped,
            "missing_annotations": self.missing_annotations,
            "decoded": self.decoded,
            "bit_depths": {str(bits): count for bits, count in sorted(self.depths.items())},
            "problems": [{"file": str(f), "message": m} for f, m in self.problems],
        }


def pair_problems(pair: LLVIPPair, *, annotations: bool = True, decode: bool = False,
                  depths: Optional[Counter] = None) -> List[Tuple[Path, str]]:
    """Problems of one pair: unreadable image, a header claiming more than ``MAX_PIXELS``, size
    mismatch between modalities and, with ``annotations``, a missing or malformed XML and bad
    boxes. Reads image headers only unless ``decode`` (then every image is decoded in full and
    a truncated or corrupt one is a problem). ``depths`` counts bits per channel."""
    sizes = []
    for path in (pair.ir, pair.vi):
        try:
            width, height, bits = image_size_and_depth(path)
        except DataError as error:
            return [(path, str(error))]
        if depths is not None:
            depths[bits] += 1
        if width * height > MAX_PIXELS:
            return [(path, f"header claims {width}x{height} pixels, more than the {MAX_PIXELS} an image may have")]
        if decode:
            problem = decode_problem(path)
            if problem:
                return [(path, problem)]
        sizes.append((width, height))
    ir_size, vi_size = sizes
    if ir_size != vi_size:
        return [(pair.vi, f"size mismatch: {pair.ir.name} is {ir_size[0]}x{ir_size[1]} but this is {vi_size[0]}x{vi_size[1]}")]
    if not annotations:
        return []
    if pair.annotation is None:
        return [(pair.ir.parents[2] / ANNOTATIONS / f"{pair.id}.xml", "missing annotation")]
    try:
        annotation = read_annotation(pair.annotation)
    except DataError as error:
        return [(pair.annotation, str(error))]
    return [(pair.annotation, message) for message in box_problems(annotation, *ir_size)]


def validate(
    root: PathLike,
    split: Optional[str],
    *,
    strict: bool,
    annotations: bool,
    decode: bool,
    progress: bool = False,
) -> ValidationReport:
    """Check an LLVIP folder: images without a partner, unreadable images, size mismatch
    between modalities, and (with ``annotations``) missing or malformed XML, boxes that are
    empty or outside the image; with ``decode`` every image is decoded in full (slower; finds
    truncated and corrupt files that headers do not show). ``split=None`` checks every split present.

    Bad pairs are left out of ``report.ok`` and listed in ``report.problems``; with ``strict``
    the first problem raises DataError naming the file. The settings are those of the
    ``validate`` section of mmdrfuse/cfg/default.yaml (``annotations`` = not ``no_annotations``).
    """
    root = check_root(root)
    splits: Sequence[str] = available_splits(root) if split is None else [split]
    if not splits:
        raise DataError(f"no images in {root}/{{infrared,visible}}/{{{','.join(SPLITS)}}}")
    report = ValidationReport(root, list(splits), annotations=annotations, decoded=decode)
    for name in splits:
        pairs, unpaired = _scan_split(root, name)
        if strict and unpaired:
            raise DataError(f"{unpaired[0][0]}: {unpaired[0][1]}")
        report.problems.extend(unpaired)
        if not pairs and not unpaired:
            raise DataError(f"no {name} images in {root}/{MODALITIES['ir']}/{name} or {root}/{MODALITIES['vi']}/{name}")
        iterator = pairs
        if progress:
            from tqdm import tqdm

            iterator = tqdm(pairs, desc=f"validate {name}", unit="pair")
        for pair in iterator:
            report.checked += 1
            problems = pair_problems(pair, annotations=annotations, decode=decode, depths=report.depths)
            if strict and problems:
                raise DataError(f"{problems[0][0]}: {problems[0][1]} (run without --strict to skip bad pairs)")
            if annotations and pair.annotation is None:
                report.missing_annotations += 1
            if problems:
                report.problems.extend(problems)
            else:
                report.ok.append(pair)
    return report
