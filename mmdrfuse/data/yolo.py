"""YOLO datasets from LLVIP annotations and one image per id (a fusion method's outputs).

Protocol (MMDRFuse section 4.5): train on 2,000 pairs of the official train split, validate
on 250 of the official test split. The subset is drawn once per seed and recorded in
``manifest.json`` so every fusion method is trained and tested on the same images.

Output layout (read by ultralytics through ``data.yaml``)::

    images/{train,val}/<id>.<ext>   links to the source images (copies where links fail)
    labels/{train,val}/<id>.txt     "0 cx cy w h" per person, normalised by the image size
    data.yaml, manifest.json
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from mmdrfuse.data.io import PathLike, check_output_outside_inputs, decode_problem, image_size, list_images
from mmdrfuse.data.llvip import (
    Annotation,
    available_splits,
    box_problems,
    list_pairs,
    read_annotation,
    size_problem,
)
from mmdrfuse.errors import DataError
from mmdrfuse.files import atomic_directory, check_output_folder, write_text_atomic

CLASSES = ("person",)
COMMAND = "prepare yolo"
MANIFEST_FORMAT = "mmdrfuse-yolo-subset/1"


def yolo_labels(annotation: Annotation, fallback_size: Optional[Tuple[int, int]] = None, *,
                size: Optional[Tuple[int, int]] = None) -> List[str]:
    """One ``"0 cx cy w h"`` line per ``person`` box, as LLVIP's own VOC->YOLO conversion:

        cx = (xmin + xmax) / 2 / W,  cy = (ymin + ymax) / 2 / H,
        w = (xmax - xmin) / W,       h = (ymax - ymin) / H

    with ``W, H`` = ``size`` (the annotated image's real size) when given, else the XML ``<size>``
    or, when it is absent, ``fallback_size`` (the image's ``(W, H)``). Objects of other classes
    are left out.
    """
    width, height = size if size is not None else (annotation.width, annotation.height)
    if not (width and height):
        if fallback_size is None:
            raise DataError("annotation has no <size>: pass the image size")
        width, height = fallback_size
    lines = []
    for label, (x0, y0, x1, y1) in zip(annotation.labels, annotation.boxes):
        if label not in CLASSES:
            continue
        values = ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height)
        lines.append(f"{CLASSES.index(label)} " + " ".join(f"{v:.6f}" for v in values))
    return lines


def select_subset(root: PathLike, *, train: int, val: int, seed: int) -> dict:
    """Draw the train/val ids once for a seed (``numpy.random.default_rng(seed)``).

    Train ids come from the official train split, val ids from the official test split;
    when the root has no test split, val is carved from train (disjoint from the train ids)
    and ``val_from`` says so. When fewer pairs exist than asked, all are taken (a carved
    split keeps the train:val proportion, at least one val pair).
    """
    if train <= 0 or val <= 0:
        raise DataError(f"--train and --val must be positive, got {train} and {val}")
    splits = available_splits(root)
    if "train" not in splits:
        raise DataError(f"no train split in {root} (expected infrared/train and visible/train)")
    rng = np.random.default_rng(seed)
    requested = {"train": train, "val": val}
    train_ids = [p.id for p in list_pairs(root, "train")]
    notes = []
    if "test" in splits:
        test_ids = [p.id for p in list_pairs(root, "test")]
        chosen_train = _draw(rng, train_ids, train)
        chosen_val = _draw(rng, test_ids, val)
        val_from = "test"
    else:
        val_from = "train"
        if len(train_ids) < 2:
            raise DataError(f"{root} has no test split and only {len(train_ids)} train pair: cannot carve a val split")
        if train + val > len(train_ids):
            val = min(len(train_ids) - 1, max(1, round(len(train_ids) * val / (train + val))))
            train = len(train_ids) - val
        order = rng.permutation(len(train_ids))
        chosen_val = sorted(train_ids[i] for i in order[:val])
        chosen_train = sorted(train_ids[i] for i in order[val : val + train])
        notes.append(
            f"no test split in {root}: val carved from the train split "
            f"({len(chosen_train)} train + {len(chosen_val)} val of {len(train_ids)} pairs; asked for {requested['train']} + {requested['val']})"
        )
    for name, got in (("train", chosen_train), ("val", chosen_val)):
        asked = requested[name]
        if len(got) < asked and val_from == "test":
            notes.append(f"only {len(got)} {name} pairs available (asked for {asked}): taking all")
    return {
        "format": MANIFEST_FORMAT,
        "seed": seed,
        "requested": requested,
        "val_from": val_from,
        "train": chosen_train,
        "val": chosen_val,
        "notes": notes,
    }


def _draw(rng: np.random.Generator, ids: Sequence[str], count: int) -> List[str]:
    if count >= len(ids):
        return sorted(ids)
    return sorted(ids[i] for i in rng.choice(len(ids), size=count, replace=False))


def read_manifest(path: PathLike) -> dict:
    """Read a subset manifest (``select_subset``'s dict, or a built dataset's manifest.json)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest file does not exist: {path}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"malformed manifest {path}: {error}") from None
    return _checked_subset(manifest.get("subset", manifest), path)


def _checked_subset(subset: dict, path: Optional[Path] = None) -> dict:
    """``subset`` when it is a subset manifest with disjoint train and val ids; else DataError naming ``path``."""
    where = f"manifest {path}" if path is not None else "the subset given"
    if subset.get("format") != MANIFEST_FORMAT or not isinstance(subset.get("train"), list):
        raise DataError(f"not an mmdrfuse YOLO subset manifest: {path if path is not None else where}")
    if set(subset["train"]) & set(subset["val"]):
        raise DataError(f"{where} has ids in both train and val")
    return subset


def _image_index(images: Path) -> Dict[str, Path]:
    """Stem -> image inside ``images`` and its ``train/``, ``test/``, ``val/`` subfolders."""
    if not images.is_dir():
        raise DataError(f"image folder does not exist: {images}")
    index: Dict[str, Path] = {}
    folders = [images] + [images / s for s in ("train", "test", "val") if (images / s).is_dir()]
    for folder in folders:
        try:
            found = list_images(folder)
        except DataError:
            continue
        for stem, path in found.items():
            if stem in index:
                raise DataError(f"image id {stem} appears twice: {index[stem]} and {path}")
            index[stem] = path
    if not index:
        raise DataError(f"no images in {images} (nor in its train/ or test/ subfolders)")
    return index


def annotation_size(annotation: Annotation) -> Optional[Tuple[int, int]]:
    """``(W, H)`` from the XML ``<size>``, or None when it is absent."""
    return (annotation.width, annotation.height) if annotation.width and annotation.height else None


def _same_aspect(annotated: Tuple[int, int], image: Tuple[int, int]) -> bool:
    """True when ``image`` is ``annotated`` resized (aspect ratios within 1%): normalised labels stay right."""
    return abs(annotated[0] * image[1] - annotated[1] * image[0]) <= 0.01 * annotated[0] * image[1]


def _source_images(root: Path) -> Dict[str, Path]:
    """Id -> the annotated LLVIP image (infrared) of every split present; its size is the boxes' frame."""
    sources: Dict[str, Path] = {}
    for split in available_splits(root):
        try:
            sources.update({pair.id: pair.ir for pair in list_pairs(root, split)})
        except DataError:
            continue
    return sources


def _link(source: Path, target: Path) -> str:
    """Symlink ``target`` -> ``source``; hardlink, then copy, where the filesystem refuses."""
    try:
        os.symlink(source, target)
        return "symlink"
    except OSError:
        pass
    try:
        os.link(source, target)
        return "hardlink"
    except OSError:
        shutil.copyfile(source, target)
        return "copy"


def build_yolo_dataset(
    root: PathLike,
    images: PathLike,
    out: PathLike,
    *,
    manifest: Union[PathLike, dict],
    strict: bool,
    progress: bool = True,
    overwrite: bool = True,
    log=print,
) -> Path:
    """Build a YOLO dataset at ``out`` from LLVIP annotations and ``images`` (one per id).

    The subset is ``manifest``: a :func:`select_subset` dict, or the path of a file holding one
    (its output, or the manifest.json of a built dataset), so every method gets the same ids.
    Ids without annotation, with a malformed one or with bad boxes are skipped and counted
    (``strict``: DataError at the first; the ``prepare_yolo`` setting); an id missing from ``images`` is always
    an error, since methods must be compared on the same images. An image may be a resize of
    the annotated one (labels are normalised); another aspect ratio is a bad annotation.
    Boxes are normalised by the real size of the annotated LLVIP image (``root``'s infrared
    image of the id), not by the XML ``<size>``: where the two disagree the log says so. An
    image that does not decode in full (truncated, corrupt) is skipped and counted.

    The folder is rebuilt from scratch under a temporary name and renamed at the end, so an
    interrupted build never looks complete. An existing ``out`` is replaced only when it is an
    earlier output of this command and ``overwrite`` (else DataError, see
    :func:`mmdrfuse.files.check_output_folder`). Returns ``out/data.yaml``.
    """
    root, images, out = Path(root), Path(images), Path(out)
    check_output_outside_inputs(out, root, images)
    check_output_folder(out, COMMAND, overwrite=overwrite)
    subset = _checked_subset(manifest) if isinstance(manifest, dict) else read_manifest(manifest)
    for note in subset.get("notes", []):
        log(note)
    index = _image_index(images)
    wanted = [(split, pair_id) for split in ("train", "val") for pair_id in subset[split]]
    missing = [pair_id for _, pair_id in wanted if pair_id not in index]
    if missing:
        raise DataError(
            f"{len(missing)} image(s) of the subset are missing from {images}, e.g. {missing[0]} "
            f"(every method must provide the same ids; fuse these first)"
        )

    sources = _source_images(root)
    skipped: Dict[str, List[str]] = {"no_annotation": [], "bad_annotation": [], "bad_image": []}
    size_notes: List[str] = []
    image_problems: List[str] = []
    problems = []
    counts = {"train": 0, "val": 0}
    boxes = {"train": 0, "val": 0}
    link_modes = set()
    iterator = wanted
    if progress:
        from tqdm import tqdm

        iterator = tqdm(wanted, desc="yolo dataset", unit="image")
    settings = {"root": str(root.resolve()), "images": str(images.resolve()), "seed": subset.get("seed"),
                "train": len(subset["train"]), "val": len(subset["val"])}
    with atomic_directory(out, command=COMMAND, settings=settings, overwrite=overwrite) as staging:
        for split in ("train", "val"):
            (staging / "images" / split).mkdir(parents=True)
            (staging / "labels" / split).mkdir(parents=True)
        for split, pair_id in iterator:
            image = index[pair_id]
            xml = root / "Annotations" / f"{pair_id}.xml"
            if not xml.is_file():
                if strict:
                    raise DataError(f"{xml}: missing annotation (run without --strict to skip such images)")
                skipped["no_annotation"].append(pair_id)
                continue
            problem = decode_problem(image)
            if problem:
                if strict:
                    raise DataError(f"{problem} (run without --strict to skip such images)")
                skipped["bad_image"].append(pair_id)
                image_problems.append(problem)
                continue
            try:
                annotation = read_annotation(xml)
                size = image_size(image)
                # The boxes are pixels of the annotated image: its real size decides, not <size>.
                reference = image_size(sources[pair_id]) if pair_id in sources else (annotation_size(annotation) or size)
                mismatch = size_problem(annotation, *reference)
                if mismatch:
                    size_notes.append(f"{xml}: {mismatch}")
                messages = box_problems(annotation, *reference, check_size=False)
                if not _same_aspect(reference, size):
                    messages.append(f"{image} is {size[0]}x{size[1]}, not a resize of the annotated image")
                if messages:
                    raise DataError(f"{xml}: " + "; ".join(messages))
            except DataError as error:
                if strict:
                    raise
                skipped["bad_annotation"].append(pair_id)
                problems.append(str(error))
                continue
            lines = yolo_labels(annotation, size=reference)
            write_text_atomic(staging / "labels" / split / f"{pair_id}.txt", "".join(f"{line}\n" for line in lines))
            link_modes.add(_link(image.resolve(), staging / "images" / split / f"{pair_id}{image.suffix}"))
            counts[split] += 1
            boxes[split] += len(lines)
        if not counts["train"] and not counts["val"]:
            raise DataError(
                f"no image of the subset has a usable annotation ({len(skipped['no_annotation'])} without one, "
                f"{len(skipped['bad_annotation'])} with a bad one, {len(skipped['bad_image'])} undecodable) "
                f"in {root / 'Annotations'}"
            )
        final = out.resolve()
        write_text_atomic(
            staging / "data.yaml",
            f"# YOLO dataset built by mmdrfuse prepare yolo from {root.resolve()}\n"
            f"path: {json.dumps(str(final))}\ntrain: images/train\nval: images/val\nnames:\n  0: person\n",
        )
        record = {
            "subset": subset,
            "root": str(root.resolve()),
            "images": str(images.resolve()),
            "counts": counts,
            "boxes": boxes,
            "skipped": skipped,
            "problems": problems + image_problems,
            "size_notes": size_notes,
            "links": sorted(link_modes),
        }
        write_text_atomic(staging / "manifest.json", json.dumps(record, indent=2) + "\n")
    if skipped["no_annotation"]:
        log(f"skipped {len(skipped['no_annotation'])} image(s) without annotation")
    if skipped["bad_image"]:
        log(f"skipped {len(skipped['bad_image'])} image(s) that do not decode; first: {image_problems[0]}")
    if skipped["bad_annotation"]:
        log(f"skipped {len(skipped['bad_annotation'])} image(s) with a bad annotation; first: {problems[0]}")
    if size_notes:
        log(f"{len(size_notes)} annotation(s) with a <size> that disagrees with the image: labels normalised by "
            f"the image's real size; first: {size_notes[0]}")
    for split in ("train", "val"):
        if not counts[split]:
            log(f"warning: the {split} split is empty; ultralytics needs images in both train and val")
    log(
        f"YOLO dataset: {counts['train']} train / {counts['val']} val images "
        f"({boxes['train']} / {boxes['val']} boxes, val from the {subset['val_from']} split) -> {out / 'data.yaml'}"
    )
    return out / "data.yaml"
