"""Image reading, pair matching and image writing shared by every stage.

Gray conversion follows the evaluation protocol of the paper's released code: the file
is decoded as 3-channel BGR and converted with ``cv2.COLOR_BGR2GRAY`` (rounded), which
differs by up to a few grey levels from decoding JPEGs straight to gray.

Images deeper than 8 bits (16-bit PNG/TIFF thermal frames, float TIFFs) are read at full depth
and mapped to uint8 by a documented rule, ``depth_range``:

- ``"minmax"`` (default): per image, ``u8 = round(255 * (x - min(x)) / (max(x) - min(x)))``
  over all channels (a constant image gives 0), so a 7000..7999 thermal frame keeps 256 levels;
- ``"full"``: the type's full range, ``round(255 * x / 65535)`` for uint16 (x / 1 for float);
- ``(lo, hi)``: a fixed range, ``round(255 * clip((x - lo) / (hi - lo), 0, 1))``, the same for
  every image (radiometric comparisons across frames).

8-bit files are decoded exactly as before (``IMREAD_COLOR``), bit for bit.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from mmdrfuse.errors import DataError
from mmdrfuse.files import write_bytes_atomic

PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# OpenCV refuses to decode more pixels than this (CV_IO_MAX_IMAGE_PIXELS); checked from the header first.
MAX_PIXELS = 2 ** 30
DepthRange = Union[str, Tuple[float, float]]
DEPTH_RANGES = ("minmax", "full")


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
        # A broken symlink is kept, so that reading it says so instead of "no partner".
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not (path.is_file() or path.is_symlink()):
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


def _missing(path: Path) -> DataError:
    if path.is_symlink():
        return DataError(f"broken symbolic link: {path} -> {os.readlink(path)} (the target does not exist)")
    return DataError(f"image file does not exist: {path}")


def parse_depth_range(value: Union[str, Sequence[float], None]) -> DepthRange:
    """``"minmax"`` | ``"full"`` | ``"LO,HI"`` (or a pair) -> the rule of the module docstring."""
    if value is None:
        return "minmax"
    if isinstance(value, str) and value.strip().lower() in DEPTH_RANGES:
        return value.strip().lower()
    try:
        lo, hi = (float(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise DataError(f"depth range must be minmax, full or LO,HI (e.g. 7000,8000), got {value!r}") from None
    if not hi > lo:
        raise DataError(f"depth range LO,HI needs HI > LO, got {value!r}")
    return (lo, hi)


def to_uint8(image: np.ndarray, depth_range: DepthRange = "minmax") -> np.ndarray:
    """An image of any depth -> uint8 of the same shape; uint8 is returned unchanged (see the module docstring)."""
    if image.dtype == np.uint8:
        return image
    values = image.astype(np.float64)
    if depth_range == "minmax":
        lo, hi = float(values.min()), float(values.max())
    elif depth_range == "full":
        lo, hi = (0.0, 1.0) if image.dtype.kind == "f" else (float(np.iinfo(image.dtype).min), float(np.iinfo(image.dtype).max))
    else:
        lo, hi = depth_range
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.uint8)
    return np.rint(np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def _imread(path: PathLike, flags: int, depth_range: DepthRange = "minmax") -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    header = header_info(path)
    if header is not None and header[0] * header[1] > MAX_PIXELS:
        raise DataError(f"image header claims {header[0]}x{header[1]} pixels, more than the {MAX_PIXELS} "
                        f"an image may have (corrupt or not a camera frame): {path}")
    # np.fromfile + imdecode handles non-ASCII paths and never prints libpng/libjpeg noise as an image.
    data = np.fromfile(str(path), dtype=np.uint8)
    deep = header is None or header[2] > 8
    try:
        # IMREAD_ANYDEPTH only where the header says (or cannot say) the file is deeper than 8
        # bits: 8-bit files decode exactly as they always did.
        image = cv2.imdecode(data, flags | (cv2.IMREAD_ANYDEPTH if deep else 0)) if data.size else None
    except cv2.error as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "OpenCV error"
        raise DataError(f"cannot decode image ({reason}): {path}") from None
    if image is None:
        raise DataError(f"cannot decode image (corrupt or unsupported): {path}")
    if image.dtype != np.uint8:
        image = to_uint8(image, depth_range)
    return image


def read_color(path: PathLike, depth_range: DepthRange = "minmax") -> np.ndarray:
    """Read an image as uint8 BGR, shape (H, W, 3); gray files are repeated to 3 channels.
    Deeper files are mapped to uint8 by ``depth_range`` (module docstring)."""
    return _imread(path, cv2.IMREAD_COLOR, depth_range)


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


def read_gray(path: PathLike, depth_range: DepthRange = "minmax") -> np.ndarray:
    """Read an image as uint8 gray (H, W) the way the paper's evaluation does (BGR2GRAY)."""
    return bgr_to_gray(read_color(path, depth_range))


def check_same_size(a: np.ndarray, b: np.ndarray, path_a: PathLike, path_b: PathLike) -> None:
    if a.shape[:2] != b.shape[:2]:
        raise DataError(
            f"size mismatch: {path_a} is {a.shape[1]}x{a.shape[0]} but {path_b} is {b.shape[1]}x{b.shape[0]}"
        )


def check_output_outside_inputs(out_dir: PathLike, *input_dirs: PathLike) -> None:
    """Refuse an output folder that is, lies inside, or contains one of the input folders
    (replacing it would delete the input)."""
    out = Path(out_dir).resolve()
    for folder in input_dirs:
        src = Path(folder).resolve()
        if out == src or src in out.parents:
            raise DataError(f"output folder {out_dir} lies inside input folder {folder}; choose another --out")
        if out in src.parents:
            raise DataError(f"output folder {out_dir} contains input folder {folder}; choose another --out")


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


def _jpeg_size(handle) -> Optional[Tuple[int, int, int]]:
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
            return int.from_bytes(header[3:5], "big"), int.from_bytes(header[1:3], "big"), header[0]
        handle.seek(length - 2, os.SEEK_CUR)
        # The next byte must start a marker; anything else means a corrupt stream.
        if handle.read(1) != b"\xff":
            return None
        handle.seek(-1, os.SEEK_CUR)


def header_info(path: PathLike) -> Optional[Tuple[int, int, int]]:
    """``(width, height, bits per channel)`` from a PNG or JPEG header, or None for other
    formats and headers this parser does not understand."""
    with open(path, "rb") as handle:
        start = handle.read(25)
        if start[:8] == b"\x89PNG\r\n\x1a\n" and start[12:16] == b"IHDR" and len(start) == 25:
            return int.from_bytes(start[16:20], "big"), int.from_bytes(start[20:24], "big"), start[24]
        if start[:2] == b"\xff\xd8":
            return _jpeg_size(handle)
    return None


def image_size(path: PathLike) -> Tuple[int, int]:
    """``(width, height)`` of an image file, from the PNG or JPEG header without decoding pixels.

    Other formats (and headers this parser does not understand) are decoded in full.
    Raises DataError naming the file when it is missing or unreadable.
    """
    return image_size_and_depth(path)[:2]


def image_size_and_depth(path: PathLike) -> Tuple[int, int, int]:
    """``(width, height, bits per channel)``, from the header where possible (see :func:`image_size`)."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    info = header_info(path)
    if info is None or min(info[:2]) <= 0:
        try:
            image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
        if image is None:
            raise DataError(f"cannot decode image (corrupt or unsupported): {path}")
        info = (image.shape[1], image.shape[0], 8 * image.dtype.itemsize)
    return info


@contextlib.contextmanager
def _native_stderr_captured():
    """Collect what native code (libjpeg's "Corrupt JPEG data" warnings) writes to fd 2.

    Yields a list that receives the captured text. Not for threaded decoding: every thread's
    stderr is captured while it is active.
    """
    captured: List[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to capture
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def read_checked(path: PathLike, *, color: bool = False, depth_range: DepthRange = "minmax") -> np.ndarray:
    """:func:`read_gray` (or :func:`read_color`) that also fails, naming the file, when libjpeg
    reports corrupt data (it decodes such files with a warning on stderr that names no file)."""
    path = Path(path)
    with _native_stderr_captured() as captured:
        image = read_color(path, depth_range)
    warning = " ".join(line.strip() for line in "".join(captured).splitlines() if "JPEG" in line)
    if warning:
        raise DataError(f"corrupt image data ({warning}): {path}")
    return image if color else bgr_to_gray(image)


def decode_problem(path: PathLike) -> Optional[str]:
    """None when ``path`` decodes cleanly, else one line naming it: unreadable, truncated, or
    decoded with libjpeg's corrupt-data warnings."""
    try:
        read_checked(path, color=True)
    except DataError as error:
        return str(error)
    return None
