"""SYNTHETIC LLVIP-like data: night street scenes rendered with numpy and OpenCV.

Not real data. It lets every stage (validation, patches, training, fusion, YOLO) run where
the real LLVIP is absent, and it is built so that fusing the two modalities measurably
helps a person detector:

- ``both`` pedestrians stand in lamp light (clear in the visible image) and are warm in
  the infrared image;
- ``ir`` pedestrians stand in darkness: in the visible image they are a few grey levels
  under sensor noise, in the infrared image they are warm;
- ``vi`` pedestrians stand behind a lit glass shelter wall: clear in the visible image,
  but glass blocks long-wave infrared, so the infrared image shows the pane at the
  temperature of the background behind it.

Every pedestrian is annotated (the ground truth is the scene, not what a sensor sees).
Pedestrians are head + torso + arms + legs silhouettes, width:height about 1:2.5.
The infrared image is stored as a 3-channel gray JPEG and the visible one in colour, in
LLVIP's layout (``infrared/{train,test}``, ``visible/{train,test}``, ``Annotations``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import cv2
import numpy as np

from mmdrfuse.data.io import PathLike, parse_size
from mmdrfuse.errors import DataError
from mmdrfuse.files import atomic_directory, check_output_folder, write_bytes_atomic, write_text_atomic

MODALITY_KINDS = ("both", "ir", "vi")
# The scene settings, keys of the prepare_synthetic section of mmdrfuse/cfg/default.yaml (their
# defaults and help live there): pedestrians (inclusive MIN,MAX per image), height (MIN,MAX as a
# fraction of the image height), ir_only and vi_only (fractions seen by one camera only).
SCENE_OPTIONS = ("pedestrians", "height", "ir_only", "vi_only")
READ_NOISE = 0.02  # visible sensor read noise, std in [0, 1] units (plus shot noise); not a command option
FIRST_ID = {"train": 10001, "test": 190001}  # LLVIP's own id ranges start like this

_LAMP_BGR = np.array([0.55, 0.82, 1.0], dtype=np.float32)  # sodium-vapour orange
_CLOTHES_BGR = np.array(
    [[0.12, 0.1, 0.1], [0.6, 0.25, 0.15], [0.15, 0.15, 0.55], [0.7, 0.7, 0.7], [0.2, 0.45, 0.2],
     [0.1, 0.35, 0.6], [0.55, 0.5, 0.45], [0.85, 0.85, 0.8]],
    dtype=np.float32,
)
# Behind glass under the shelter's light they must stay visible after a max-intensity fusion
# with the infrared pane, so their clothes are light.
_BRIGHT_CLOTHES_BGR = np.array([[0.7, 0.7, 0.7], [0.85, 0.85, 0.8], [0.4, 0.6, 0.85], [0.8, 0.55, 0.4]], np.float32)

COMMAND = "prepare synthetic"


def _min_max(value, name: str) -> Tuple[float, float]:
    """A ``(min, max)`` pair from a 2-sequence or a ``"MIN,MAX"`` string (as in default.yaml)."""
    items = str(value).split(",") if isinstance(value, str) else list(value)
    if len(items) != 2:
        raise ValueError(f"{name} must be MIN,MAX, got {value!r}")
    return float(items[0]), float(items[1])


def _scene_options(*, pedestrians, height, ir_only: float, vi_only: float, noise: float) -> dict:
    """The scene settings checked, with the ranges as tuples (``"MIN,MAX"`` strings accepted)."""
    merged = {"pedestrians": tuple(int(v) for v in _min_max(pedestrians, "pedestrians")),
              "height": tuple(float(v) for v in _min_max(height, "height")),
              "ir_only": ir_only, "vi_only": vi_only, "noise": noise}
    low, high = merged["pedestrians"]
    if not 0 <= low <= high:
        raise ValueError(f"pedestrians range must satisfy 0 <= min <= max, got {merged['pedestrians']}")
    h_low, h_high = merged["height"]
    if not 0 < h_low <= h_high < 1:
        raise ValueError(f"height range must lie in (0, 1), got {merged['height']}")
    if merged["ir_only"] < 0 or merged["vi_only"] < 0 or merged["ir_only"] + merged["vi_only"] > 1:
        raise ValueError("ir_only and vi_only must be >= 0 with ir_only + vi_only <= 1")
    return merged


def _smooth_noise(rng: np.random.Generator, shape: Tuple[int, int], cell: int) -> np.ndarray:
    """Value noise in [0, 1], float32 (H, W): uniform noise on a ``cell``-pixel grid, upsampled cubically."""
    height, width = shape
    coarse = rng.random((height // cell + 2, width // cell + 2), dtype=np.float32)
    return np.clip(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)


_FIELD_STEP = 8  # light fields are smooth: evaluate them on a grid 8 times coarser


def _gaussian_field(shape: Tuple[int, int], blobs: Sequence[Tuple[float, float, float, float, float]]) -> np.ndarray:
    """Sum of anisotropic Gaussians ``a * exp(-((x-cx)/sx)^2/2 - ((y-cy)/sy)^2/2)`` sampled every
    ``_FIELD_STEP`` pixels of an (H, W) image: float32 (H / step + 1, W / step + 1); see ``_upsample``."""
    height, width = shape
    ys = (np.arange(height // _FIELD_STEP + 1, dtype=np.float32) * _FIELD_STEP)[:, None]
    xs = (np.arange(width // _FIELD_STEP + 1, dtype=np.float32) * _FIELD_STEP)[None, :]
    field = np.zeros((ys.shape[0], xs.shape[1]), dtype=np.float32)
    for cx, cy, sx, sy, amplitude in blobs:
        field += amplitude * np.exp(-0.5 * ((xs - cx) / sx) ** 2) * np.exp(-0.5 * ((ys - cy) / sy) ** 2)
    return field


def _upsample(field: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """A coarse field (1 or 3 channels) bilinearly resized to the full (H, W)."""
    return cv2.resize(field, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def pedestrian_masks(height: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anti-aliased masks (legs, torso with arms, head), float32 in [0, 1], each (height, width).

    Proportions of a standing or walking adult: head about 1/7.5 of the height, shoulders
    about 0.26 h wide, legs from 0.5 h down, a random stride; width:height about 1:2.5.
    """
    h = float(height)
    width = int(round(0.42 * h)) + 2
    centre = width / 2.0
    stride = rng.uniform(-0.1, 0.1) * h  # feet apart when walking
    sway = rng.uniform(-0.04, 0.04) * h  # arm swing
    shift = 4  # cv2 fixed-point bits: sub-pixel vertices
    scale = 1 << shift

    def poly(points: List[Tuple[float, float]], canvas: np.ndarray) -> None:
        vertices = np.round(np.array(points) * scale).astype(np.int32)
        cv2.fillPoly(canvas, [vertices], 255, lineType=cv2.LINE_AA, shift=shift)

    legs = np.zeros((height, width), np.uint8)
    torso = np.zeros_like(legs)
    head = np.zeros_like(legs)
    hip_y, foot_y = 0.5 * h, h - 1.0
    for side, foot_dx in ((-1, stride), (1, -stride)):
        hip_x = centre + side * 0.055 * h
        foot_x = centre + side * 0.045 * h + foot_dx
        poly([(hip_x - 0.055 * h, hip_y), (hip_x + 0.055 * h, hip_y),
              (foot_x + 0.035 * h, foot_y), (foot_x - 0.035 * h, foot_y)], legs)
    shoulder_y = 0.16 * h
    poly([(centre - 0.13 * h, shoulder_y), (centre + 0.13 * h, shoulder_y),
          (centre + 0.1 * h, hip_y + 0.04 * h), (centre - 0.1 * h, hip_y + 0.04 * h)], torso)
    for side, swing in ((-1, sway), (1, -sway)):
        top_x = centre + side * 0.13 * h
        hand_x = centre + side * 0.16 * h + swing
        poly([(top_x - side * 0.04 * h, shoulder_y), (top_x + side * 0.02 * h, shoulder_y),
              (hand_x + side * 0.02 * h, 0.5 * h), (hand_x - side * 0.035 * h, 0.5 * h)], torso)
    poly([(centre - 0.03 * h, 0.11 * h), (centre + 0.03 * h, 0.11 * h),
          (centre + 0.03 * h, 0.17 * h), (centre - 0.03 * h, 0.17 * h)], torso)  # neck
    radius = 0.065 * h
    cv2.ellipse(head, (int(round(centre * scale)), int(round(0.072 * h * scale))),
                (int(round(radius * 0.85 * scale)), int(round(radius * scale))), 0, 0, 360, 255, -1,
                lineType=cv2.LINE_AA, shift=shift)
    return legs.astype(np.float32) / 255, torso.astype(np.float32) / 255, head.astype(np.float32) / 255


def _blend(image: np.ndarray, y: int, x: int, alpha: np.ndarray, value) -> None:
    """``image = image * (1 - alpha) + value * alpha`` in place over the region at ``(y, x)``
    (clipped to the image); ``value`` is a scalar or one value per channel."""
    h, w = alpha.shape
    region = image[y : y + h, x : x + w]
    a = alpha[: region.shape[0], : region.shape[1]]
    if region.ndim == 3:
        a = a[..., None]
    region *= 1 - a
    region += a * value


def _place_pedestrians(rng, width, height, horizon, options) -> List[dict]:
    """Sizes, positions and modality of the pedestrians, feet on the ground below the horizon,
    kept apart (with room for a glass pane or a pool of darkness); the far ones first."""
    count = int(rng.integers(options["pedestrians"][0], options["pedestrians"][1] + 1))
    kinds = list(rng.choice(
        MODALITY_KINDS, size=count, p=[1 - options["ir_only"] - options["vi_only"], options["ir_only"], options["vi_only"]]
    ))
    # Empty glass shelters too, so that a pane in the infrared image does not give a person away.
    kinds += ["empty"] * int(rng.integers(0, 3) if options["vi_only"] > 0 else 0)
    people: List[dict] = []
    occupied: List[Tuple[float, float, float, float]] = []
    for kind in kinds:
        for _ in range(50):  # rejection sampling; a pedestrian with no free place is left out
            ped_h = int(round(rng.uniform(*options["height"]) * height))
            ped_h = max(12, min(ped_h, height - 2))
            ped_w = int(round(0.42 * ped_h)) + 2
            lowest_feet = max(horizon + 0.2 * ped_h, ped_h + 1)
            if lowest_feet > height - 2 or ped_w >= width:
                continue
            feet = rng.uniform(lowest_feet, height - 2)
            x0 = int(rng.integers(0, width - ped_w))
            y0 = int(round(feet)) - ped_h
            # Room for a glass pane in front of "vi" people (anywhere behind it), and for the
            # darkness around "ir" ones.
            if kind in ("vi", "empty"):
                left, right, top = rng.uniform(0.2, 0.7, size=3) * (ped_w, ped_w, 0.5 * ped_h)
            elif kind == "ir":
                left, right, top = 0.6 * ped_w, 0.6 * ped_w, 0.05 * ped_h
            else:
                left, right, top = 0.1 * ped_w, 0.1 * ped_w, 0.05 * ped_h
            zone = (x0 - left, y0 - top, x0 + ped_w + right, y0 + ped_h)
            if all(zone[2] < o[0] or zone[0] > o[2] or zone[3] < o[1] or zone[1] > o[3] for o in occupied):
                occupied.append(zone)
                people.append({"kind": str(kind), "x0": x0, "y0": y0, "h": ped_h, "zone": zone})
                break
    return sorted(people, key=lambda p: p["y0"] + p["h"])


def _background(rng, width, height, horizon):
    """Albedo (BGR) and emission of the visible scene, and the infrared temperature map."""
    shape = (height, width)
    texture = _smooth_noise(rng, shape, 24)
    grain = rng.random(shape, dtype=np.float32)
    albedo = np.empty((height, width, 3), np.float32)
    emission = np.zeros_like(albedo)
    temperature = np.empty(shape, np.float32)
    ground = int(horizon)
    rows = np.arange(height, dtype=np.float32)[:, None]
    albedo[:ground] = (0.1, 0.05, 0.04)
    temperature[:ground] = 0.06 + 0.08 * rows[:ground] / max(horizon, 1)  # cold sky, warmer near the horizon
    # Road: asphalt warmer than the air at night, brighter towards the camera.
    depth = (rows[ground:] - horizon) / max(height - horizon, 1)
    road = 0.16 + 0.06 * texture[ground:] + 0.04 * grain[ground:]
    albedo[ground:] = road[..., None] * np.array([1.0, 1.0, 1.05], np.float32)
    temperature[ground:] = 0.38 + 0.12 * depth + 0.05 * texture[ground:]
    sidewalk = int(horizon + 0.06 * height)
    albedo[ground:sidewalk] *= 1.6
    temperature[ground:sidewalk] -= 0.04
    vanish_x = width * rng.uniform(0.35, 0.65)
    for offset in np.linspace(-1.2, 1.2, 5):  # dashed lane markings converging on the horizon
        for t0 in np.arange(0.1, 1.0, 0.18):
            t1 = t0 + 0.08
            pts = [(vanish_x + offset * width * t, horizon + (height - horizon) * t) for t in (t0, t1)]
            thickness = max(1, int(6 * t1 * width / 640))
            cv2.line(albedo, tuple(map(int, pts[0])), tuple(map(int, pts[1])), (0.6, 0.62, 0.62), thickness)
    # Buildings along the horizon: textured facades, window grids (some lit, glass cooler in infrared).
    x = 0
    while x < width:
        b_w = int(rng.uniform(0.08, 0.22) * width)
        top = int(rng.uniform(0.03, 0.8) * horizon)
        base = int(horizon)
        tone = rng.uniform(0.18, 0.4) * np.array(rng.choice([[1, 1, 1], [0.8, 0.9, 1.1], [1.1, 1.0, 0.85]]), np.float32)
        facade = albedo[top:base, x : x + b_w]
        facade[:] = tone * (0.75 + 0.5 * texture[top:base, x : x + b_w, None])
        temperature[top:base, x : x + b_w] = rng.uniform(0.26, 0.36) + 0.05 * texture[top:base, x : x + b_w]
        win = max(3, int(0.018 * width))
        for wy in range(top + win, base - 2 * win, 2 * win):
            for wx in range(x + win, x + b_w - win, 2 * win):
                lit = rng.random() < 0.2
                if lit:
                    emission[wy : wy + win, wx : wx + win] = rng.uniform(0.25, 0.6) * np.array([0.5, 0.8, 1.0], np.float32)
                albedo[wy : wy + win, wx : wx + win] = 0.05
                temperature[wy : wy + win, wx : wx + win] += 0.06 if lit else -0.05
        x += b_w + int(rng.uniform(0, 0.03) * width)
    return albedo, emission, temperature, texture


def _glass_pane(zone, albedo: np.ndarray, temperature: np.ndarray, texture: np.ndarray) -> None:
    """A glass shelter wall over ``zone`` (x0, y0, x1, y1): opaque to long-wave infrared, it
    shows the reflected cold sky, a little cooler than what lies behind it; a thin frame."""
    height, width = temperature.shape
    x0, y0, x1, y1 = (int(round(v)) for v in zone)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    pane = temperature[y0:y1, x0:x1]
    behind = float(np.median(pane))
    pane[:] = behind - 0.05 + 0.02 * texture[y0:y1, x0:x1]
    frame = max(1, width // 320)
    cv2.rectangle(temperature, (x0, y0), (x1 - 1, y1 - 1), behind - 0.08, frame)
    cv2.rectangle(albedo, (x0, y0), (x1 - 1, y1 - 1), (0.35, 0.35, 0.35), frame)


def render_pair(rng: np.random.Generator, size: Tuple[int, int], *, pedestrians, height, ir_only: float,
                vi_only: float, noise: float = READ_NOISE):
    """Render one SYNTHETIC night street scene.

    Returns ``(ir, vi, boxes)``: ``ir`` uint8 (H, W) gray, ``vi`` uint8 (H, W, 3) BGR, and
    one dict per pedestrian ``{"label": "person", "xmin", "ymin", "xmax", "ymax",
    "modality": "both" | "ir" | "vi"}`` in pixels (``xmax``/``ymax`` exclusive). ``size``
    is ``(W, H)``. Scene settings (``SCENE_OPTIONS``, defaults in default.yaml's
    ``prepare_synthetic``): ``pedestrians=(min, max)`` count per image, ``height=(min, max)``
    as a fraction of H, ``ir_only`` and ``vi_only`` fractions (the rest are seen by both);
    ``noise`` is the visible read noise std in [0, 1].

    Image formation: ``vi = albedo * illumination * lamp_colour + emission + noise`` with
    noise std ``noise + 0.03 sqrt(signal)`` (read + shot noise); ``ir = blur(temperature)``
    plus a little noise, temperature in [0, 1] mapped to 0..255.
    """
    options = _scene_options(pedestrians=pedestrians, height=height, ir_only=ir_only, vi_only=vi_only, noise=noise)
    width, height = int(size[0]), int(size[1])  # from here on height is the image's, no longer the pedestrians' range
    shape = (height, width)
    if width < 32 or height < 32:
        raise ValueError(f"image size must be at least 32x32, got {width}x{height}")
    horizon = rng.uniform(0.3, 0.45) * height
    albedo, emission, temperature, texture = _background(rng, width, height, horizon)
    people = _place_pedestrians(rng, width, height, horizon, options)

    # Light: dim ambient, street lamps away from the people who must stay in darkness,
    # and a light over every pedestrian the visible camera should see (a lamp or the shelter's).
    dark = [p for p in people if p["kind"] == "ir"]
    for person in dark:  # windows behind them are unlit: no bright backdrop to show a silhouette
        zx0, zy0, zx1, zy1 = (max(0, int(round(v))) for v in person["zone"])
        emission[zy0:zy1, zx0:zx1] = 0
    lamps = []
    for _ in range(int(rng.integers(1, 4))):
        lamp_x = rng.uniform(0, width)
        if all(abs(lamp_x - (p["x0"] + 0.2 * p["h"])) > 0.25 * width for p in dark):
            lamps.append((lamp_x, rng.uniform(horizon + 0.05 * height, height), 0.12 * width, 0.12 * height, 0.8))
    lights = lamps + [
        (p["x0"] + 0.21 * p["h"], p["y0"] + 0.5 * p["h"], 0.3 * p["h"], 0.7 * p["h"], 1.0 if p["kind"] == "both" else 1.3)
        for p in people if p["kind"] != "ir"  # "vi" and "empty": the shelter's own light
    ]
    illumination = 0.05 + _gaussian_field(shape, lights)
    if dark:
        # Flat-topped darkness: 1 - 3 g reaches the 0.03 floor over the whole body.
        shadow = _gaussian_field(shape, [(p["x0"] + 0.21 * p["h"], p["y0"] + 0.5 * p["h"],
                                                   0.25 * p["h"], 0.6 * p["h"], 3.0) for p in dark])
        illumination *= np.clip(1.0 - shadow, 0.03, 1.0)
    for lamp_x, lamp_y, *_ in lamps:
        top = max(2, int(lamp_y - 0.45 * height))
        cv2.line(albedo, (int(lamp_x), top), (int(lamp_x), int(lamp_y)), (0.3, 0.3, 0.3), max(1, width // 320))
        cv2.circle(emission, (int(lamp_x), top), max(2, width // 160), (0.6, 0.9, 1.2), -1)
        cv2.circle(temperature, (int(lamp_x), top), max(2, width // 200), 0.7, -1)

    boxes = []
    for person in people:
        x0, y0, kind = person["x0"], person["y0"], person["kind"]
        if kind in ("vi", "empty"):
            _glass_pane(person["zone"], albedo, temperature, texture)
            if kind == "empty":
                continue
        legs, torso, head = pedestrian_masks(person["h"], rng)
        union = np.maximum(np.maximum(legs, torso), head)
        rows, cols = np.nonzero(union > 0.25)
        boxes.append({"label": "person", "xmin": x0 + int(cols.min()), "ymin": y0 + int(rows.min()),
                      "xmax": x0 + int(cols.max()) + 1, "ymax": y0 + int(rows.max()) + 1, "modality": kind})
        if kind == "vi":
            upper, lower = _BRIGHT_CLOTHES_BGR[rng.integers(len(_BRIGHT_CLOTHES_BGR), size=2)]
        else:
            skin = rng.uniform(0.85, 0.97)
            for mask, warmth in ((legs, rng.uniform(0.7, 0.8)), (torso, rng.uniform(0.72, 0.85)), (head, skin)):
                _blend(temperature, y0, x0, mask, np.float32(warmth))
            upper, lower = _CLOTHES_BGR[rng.integers(len(_CLOTHES_BGR), size=2)]
        skin_bgr = np.array([0.45, 0.55, 0.75], np.float32) * rng.uniform(0.5, 1.1)
        for mask, colour in ((legs, lower), (torso, upper), (head, skin_bgr)):
            _blend(albedo, y0, x0, mask, colour)
            _blend(emission, y0, x0, mask, np.float32(0))  # people hide the lit windows behind them

    glow = _gaussian_field(shape, [(lt[0], lt[1], lt[2] * 0.3, lt[3] * 0.3, 0.08) for lt in lights])
    vi = albedo
    vi *= _upsample(illumination[..., None] * _LAMP_BGR, shape)
    vi += emission
    vi += _upsample(glow[..., None] * _LAMP_BGR, shape)
    # Sensor noise: read noise plus shot noise on the luminance, coarser chroma noise.
    signal = cv2.cvtColor(vi, cv2.COLOR_BGR2GRAY)
    luma_noise = (options["noise"] + 0.03 * cv2.sqrt(cv2.max(signal, 0.0))) * rng.standard_normal(shape, dtype=np.float32)
    vi += luma_noise[..., None]
    chroma = rng.standard_normal((height // 4 + 1, width // 4 + 1, 3), dtype=np.float32) * (0.5 * options["noise"])
    vi += cv2.resize(chroma, (width, height), interpolation=cv2.INTER_NEAREST)
    vi_u8 = cv2.convertScaleAbs(vi.clip(0, None), alpha=255.0)

    temperature = cv2.GaussianBlur(temperature, (0, 0), max(0.6, width / 640))  # thermal optics are soft
    temperature += 0.008 * rng.standard_normal(shape, dtype=np.float32)
    ir_u8 = cv2.convertScaleAbs(temperature.clip(0, None), alpha=255.0)
    return ir_u8, vi_u8, boxes


def annotation_xml(pair_id: str, width: int, height: int, boxes: Sequence[dict]) -> str:
    """VOC XML in LLVIP's form (``<size>``, ``<object><name>person</name><bndbox>``), marked synthetic."""
    objects = "".join(
        "\t<object>\n\t\t<name>person</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>0</difficult>\n\t\t<modality>{b['modality']}</modality>\n\t\t<bndbox>\n"
        f"\t\t\t<xmin>{b['xmin']}</xmin>\n\t\t\t<ymin>{b['ymin']}</ymin>\n"
        f"\t\t\t<xmax>{b['xmax']}</xmax>\n\t\t\t<ymax>{b['ymax']}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for b in boxes
    )
    return (
        f'<?xml version="1.0" ?><annotation>\n\t<folder>JPEGImages</folder>\n\t<filename>{pair_id}.jpg</filename>\n'
        "\t<source>\n\t\t<database>SYNTHETIC (mmdrfuse prepare synthetic), not real LLVIP</database>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>1</depth>\n\t</size>\n"
        f"\t<segmented>0</segmented>\n{objects}</annotation>\n"
    )


_NOTE = """# SYNTHETIC data: not LLVIP

Rendered by `mmdrfuse prepare synthetic` (module `mmdrfuse.data.synthetic`) in LLVIP's
layout so that every mmdrfuse stage can run without the real dataset. Nothing here was
captured by a camera; numbers measured on it say nothing about real-data performance.

- seed: {seed}; size: {width}x{height}; pairs: {train} train, {test} test
- scene options: {options}
- `infrared/`: 3-channel gray JPEG (warm pedestrians, cool sky, lukewarm road and buildings)
- `visible/`: colour JPEG, low light with sensor noise, street lamps, lit windows
- `Annotations/<id>.xml`: VOC boxes of every pedestrian, with an extra `<modality>` tag:
  `both` (seen by both cameras), `ir` (in darkness: only infrared sees them),
  `vi` (behind glass, which blocks long-wave infrared: only the visible camera sees them)
- `synthetic.json`: the same boxes, machine-readable, with the generation parameters

Same seed and options give the same files.
"""


def generate(
    out: PathLike,
    *,
    train: int,
    test: int,
    size: Union[str, Tuple[int, int]],
    seed: int,
    pedestrians,
    height,
    ir_only: float,
    vi_only: float,
    progress: bool = True,
    jpeg_quality: int = 95,
    overwrite: bool = True,
) -> Path:
    """Write a SYNTHETIC LLVIP-like dataset to ``out`` (built atomically) and return ``out``.

    The settings (``train`` to ``vi_only``) are the keys of the ``prepare_synthetic`` section
    of mmdrfuse/cfg/default.yaml, which holds their defaults (``mmdrfuse.config.defaults``);
    ``size`` is ``"WxH"`` or ``(W, H)``, the ranges ``"MIN,MAX"`` or a pair (see :func:`render_pair`).

    Pair ``i`` of a split is rendered with ``numpy.random.default_rng([seed, split, i])``, so
    a pair does not depend on how many others are asked for. An existing ``out`` is replaced
    only when it is an earlier output of this command and ``overwrite`` (else DataError).
    """
    options = _scene_options(pedestrians=pedestrians, height=height, ir_only=ir_only, vi_only=vi_only, noise=READ_NOISE)
    width, height = parse_size(size)  # from here on height is the image's, no longer the pedestrians' range
    if train < 0 or test < 0 or train + test == 0:
        raise DataError(f"need a positive number of pairs, got train={train}, test={test}")
    out = Path(out)
    check_output_folder(out, COMMAND, overwrite=overwrite)
    jobs = [(split, i) for split, count in (("train", train), ("test", test)) for i in range(count)]
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc="synthetic pairs", unit="pair")
    record: Dict[str, dict] = {}
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    settings = {"train": train, "test": test, "size": [width, height], "seed": seed}
    with atomic_directory(out, command=COMMAND, settings=settings, overwrite=overwrite) as staging:
        for split, i in jobs:
            pair_id = f"{FIRST_ID[split] + i:06d}"
            rng = np.random.default_rng([seed, 0 if split == "train" else 1, i])
            ir, vi, boxes = render_pair(rng, (width, height), **options)
            for folder, image in (("infrared", cv2.merge([ir, ir, ir])), ("visible", vi)):
                ok, data = cv2.imencode(".jpg", image, params)
                if not ok:
                    raise DataError(f"cannot encode {folder}/{split}/{pair_id}.jpg")
                write_bytes_atomic(staging / folder / split / f"{pair_id}.jpg", data.tobytes())
            write_text_atomic(staging / "Annotations" / f"{pair_id}.xml", annotation_xml(pair_id, width, height, boxes))
            record[pair_id] = {"split": split, "boxes": boxes}
        described = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
        meta = {"synthetic": True, "generator": "mmdrfuse.data.synthetic", "seed": seed,
                "size": [width, height], "train": train, "test": test, "scene_options": described, "pairs": record}
        write_text_atomic(staging / "synthetic.json", json.dumps(meta, indent=1) + "\n")
        write_text_atomic(staging / "SYNTHETIC.md", _NOTE.format(seed=seed, width=width, height=height,
                                                                 train=train, test=test, options=described))
    return out

