"""Image reading, pair matching and image writing shared by every stage.

Gray conversion follows the evaluation protocol of the paper's released code: the file
is decoded as 3-channel BGR and converted with ``cv2.COLOR_BGR2GRAY`` (rounded), which
differs by up to a few grey levels from decoding JPEGs straight to gray.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import cv2
import numpy as np

from mmdrfuse.errors import DataError
from mmdrfuse.files import write_bytes_atomic

PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(folder: PathLike, *, allow_empty: bool = False) -> Dict[str, Path]:
    """Map file stem -> path for the images directly inside ``folder`` (sorted by stem).

    Raises DataError for two files with the same stem, and for a missing or empty folder
    unless ``allow_empty`` (then it returns ``{}``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        if allow_empty:
            return {}
        raise DataError(f"image folder does not exist: {folder}")
    images: Dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        if path.stem in images:
            raise DataError(f"two images with the same stem in {folder}: {images[path.stem].name} and {path.name}")
        images[path.stem] = path
    if not images and not allow_empty:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder: {folder}")
    return images


def match_pairs(
    first_dir: PathLike, second_dir: PathLike, *, allow_missing: bool = False
) -> Tuple[List[Tuple[str, Path, Path]], List[str]]:
    """Match the images of two folders by file stem.

    Returns ``(pairs, unmatched)`` where ``pairs`` is a list of ``(stem, first, second)``
    sorted by stem and ``unmatched`` lists a message per image without a partner. Unless
    ``allow_missing`` is set, any unmatched image is a DataError that lists all of them.
    """
    first, second = list_images(first_dir), list_images(second_dir)
    unmatched = [f"{p} has no partner in {second_dir}" for s, p in first.items() if s not in second]
    unmatched += [f"{p} has no partner in {first_dir}" for s, p in second.items() if s not in first]
    if unmatched and not allow_missing:
        raise DataError("unpaired images:\n  " + "\n  ".join(unmatched))
    pairs = [(s, first[s], second[s]) for s in sorted(first) if s in second]
    if not pairs:
        raise DataError(f"no image stems in common between {first_dir} and {second_dir}")
    return pairs, unmatched


def _imread(path: PathLike, flags: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file does not exist: {path}")
    # np.fromfile + imdecode handles non-ASCII paths and never prints libpng/libjpeg noise as an image.
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise DataError(f"cannot decode image (corrupt or unsupported): {path}")
    if image.dtype != np.uint8:
        raise DataError(f"only 8-bit images are supported, got {image.dtype}: {path}")
    return image


def read_color(path: PathLike) -> np.ndarray:
    """Read an image as uint8 BGR, shape (H, W, 3); gray files are repeated to 3 channels."""
    return _imread(path, cv2.IMREAD_COLOR)


def read_as_stored(path: PathLike) -> np.ndarray:
    """Read an image the way MATLAB's ``imread`` does: uint8 (H, W) for a gray file, (H, W, 3) RGB
    for a colour one, alpha dropped, no EXIF rotation (the VIFB convention scores images so)."""
    image = _imread(path, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def bgr_to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) BGR -> uint8 (H, W) with cv2.COLOR_BGR2GRAY; a 2-D input is returned as is."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def read_gray(path: PathLike) -> np.ndarray:
    """Read an image as uint8 gray (H, W) the way the paper's evaluation does (BGR2GRAY)."""
    return bgr_to_gray(read_color(path))


def check_same_size(a: np.ndarray, b: np.ndarray, path_a: PathLike, path_b: PathLike) -> None:
    if a.shape[:2] != b.shape[:2]:
        raise DataError(
            f"size mismatch: {path_a} is {a.shape[1]}x{a.shape[0]} but {path_b} is {b.shape[1]}x{b.shape[0]}"
        )


def check_output_outside_inputs(out_dir: PathLike, *input_dirs: PathLike) -> None:
    """Refuse an output folder that is, or lies inside, one of the input folders."""
    out = Path(out_dir).resolve()
    for folder in input_dirs:
        src = Path(folder).resolve()
        if out == src or src in out.parents:
            raise DataError(f"output folder {out_dir} lies inside input folder {folder}; choose another --out")


def encode_image(path: PathLike, image: np.ndarray) -> np.ndarray:
    """The bytes of ``image`` encoded with the codec of ``path``'s extension (PNG without one)."""
    ok, encoded = cv2.imencode(Path(path).suffix or ".png", image)
    if not ok:
        raise DataError(f"cannot encode image for {path}")
    return encoded


def write_image_atomic(path: PathLike, image: np.ndarray) -> None:
    """Encode ``image`` with the codec of ``path``'s extension and move it into place atomically."""
    write_bytes_atomic(path, encode_image(path, image).tobytes())


def write_image_staged(path: PathLike, image: np.ndarray) -> None:
    """Write ``image`` straight to ``path``: only for files inside a staging folder that is
    itself renamed into place (see :func:`atomic_directory`), where a per-file rename is redundant."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_image(path, image).tofile(str(path))


def parse_size(text: Union[str, Sequence[int]], *, minimum: int = 1) -> Tuple[int, int]:
    """``"640x512"`` (or a (W, H) pair) -> ``(640, 512)``; both at least ``minimum``."""
    try:
        width, height = text if isinstance(text, (tuple, list)) else str(text).lower().split("x")
        width, height = int(width), int(height)
    except ValueError:
        raise DataError(f"size must look like WIDTHxHEIGHT (e.g. 640x512), got {text!r}") from None
    if min(width, height) < minimum:
        raise DataError(f"size needs width and height of at least {minimum}, got {text!r}")
    return width, height


# JPEG start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(handle) -> Union[Tuple[int, int], None]:
    handle.seek(2)
    while True:
        byte = handle.read(1)
        while byte == b"\xff":  # fill bytes before a marker
            byte = handle.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length field
            continue
        length_bytes = handle.read(2)
        if len(length_bytes) < 2:
            return None
        length = int.from_bytes(length_bytes, "big")
        if marker in _JPEG_SOF_MARKERS:
            header = handle.read(5)
            if len(header) < 5:
                return None
            return int.from_bytes(header[3:5], "big"), int.from_bytes(header[1:3], "big")
        handle.seek(length - 2, os.SEEK_CUR)
        # The next byte must start a marker; anything else means a corrupt stream.
        if handle.read(1) != b"\xff":
            return None
        handle.seek(-1, os.SEEK_CUR)


def image_size(path: PathLike) -> Tuple[int, int]:
    """``(width, height)`` of an image file, from the PNG or JPEG header without decoding pixels.

    Other formats (and headers this parser does not understand) are decoded in full.
    Raises DataError naming the file when it is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file does not exist: {path}")
    with open(path, "rb") as handle:
        start = handle.read(24)
        size = None
        if start[:8] == b"\x89PNG\r\n\x1a\n" and start[12:16] == b"IHDR":
            size = int.from_bytes(start[16:20], "big"), int.from_bytes(start[20:24], "big")
        elif start[:2] == b"\xff\xd8":
            size = _jpeg_size(handle)
    if size is None or min(size) <= 0:
        height, width = _imread(path, cv2.IMREAD_UNCHANGED).shape[:2]
        size = (width, height)
    return size
