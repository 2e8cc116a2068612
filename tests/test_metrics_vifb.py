"""The VIFB convention: MATLAB's values (values.csv), the straightforward transcription, VIFB's colour rules."""
from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import pytest
from conftest import shared_path
from reference_vifb import REFERENCE, rgb2gray

from mmdrfuse.cli import main
from mmdrfuse.data.io import read_as_stored
from mmdrfuse.errors import DataError
from mmdrfuse.metrics import evaluate_folders, evaluate_pair
from mmdrfuse.metrics.evaluate import parse_metrics
from mmdrfuse.metrics.qabf import qabf_numpy, qabf_numpy_many
from mmdrfuse.metrics.ssim import ssim_means_numpy, ssim_means_numpy_many
from mmdrfuse.metrics.vifb import VIFB_METRICS, vifb_scores
from mmdrfuse.metrics.vifb.channels import rgb2gray as fast_rgb2gray
from mmdrfuse.metrics.vifb.chen import normalize1
from mmdrfuse.metrics.vifb.scores import _share_equal, spatial_frequency

CSV_NAMES = {
    "Avg_gradient": "AG", "Cross_entropy": "CE", "Edge_intensity": "EI", "Entropy": "EN", "Mutinf": "MI",
    "Psnr": "PSNR", "Qabf": "Qabf", "Qcb": "Qcb", "Qcv": "Qcv", "Rmse": "RMSE", "Spatial_frequency": "SF",
    "Ssim": "SSIM", "Variance": "SD",
}


def test_every_metric_equals_matlab_on_vifb():
    """>= 99% of the 84 per-image values (21 pairs x 4 methods) of each metric within
    max(1e-3 relative, 1e-4 absolute) of MATLAB's (values.csv keeps 5 significant digits)."""
    root = shared_path("datasets", "VIFB")
    expected = {}
    with open(root / "values.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            expected[(row["method"], row["image"], CSV_NAMES[row["metric"]])] = float(row["value"])
    methods = sorted({method for method, _, _ in expected})
    assert len(methods) == 4
    close = {name: [] for name in VIFB_METRICS}
    for method in methods:
        result = evaluate_folders(root / "fused" / method, root / "ir", root / "vi", convention="vifb", progress=False)
        assert result["n"] == 21 and list(result["mean"]) == list(VIFB_METRICS)
        for row in result["per_image"]:
            for name in VIFB_METRICS:
                want = expected[(method, row["name"], name)]
                close[name].append(abs(row[name] - want) <= max(1e-3 * abs(want), 1e-4))
    for name, flags in close.items():
        assert len(flags) == 84 and np.mean(flags) >= 0.99, (name, int(np.sum(flags)))


def _texture(seed: int, shape, colour: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    size = shape + ((3,) if colour else ())
    noise = cv2.GaussianBlur(rng.random(size) * 255, (0, 0), 1.5)
    return np.clip((noise - noise.mean()) * 6 + 128, 0, 255).round().astype(np.uint8)


# Odd sizes (freqspace's odd grid), widths and heights not multiples of 16 (blkproc's padded blocks).
CASES = {
    "all colour": ((37, 53), True, True, True),
    "gray infrared, colour fused": ((40, 45), True, False, True),
    "gray fused, colour sources": ((33, 48), True, True, False),
    "gray fused, gray infrared": ((48, 35), True, False, False),
    "all gray": ((32, 32), False, False, False),
    "all colour, Qcb in the frequency domain": ((66, 75), True, True, True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_metrics_equal_the_transcription(case):
    shape, vi_colour, ir_colour, fused_colour = CASES[case]
    vi, ir, fused = (_texture(seed, shape, colour) for seed, colour in ((1, vi_colour), (2, ir_colour), (3, fused_colour)))
    names = [name for name in VIFB_METRICS if not (fused.ndim == 2 and vi.ndim == 3 and name in ("Qcb", "Qcv"))]
    ours = vifb_scores(vi, ir, fused, names)
    for name in names:
        # Qabf (mmdrfuse.metrics.qabf) works in float32 and without VIFB's factor 255, which only
        # changes the value at ties g_S = g_F = 1: ~1e-8 relative here.
        tolerance = 1e-6 if name == "Qabf" else 1e-9
        assert ours[name] == pytest.approx(REFERENCE[name](vi, ir, fused), rel=tolerance), name


def test_repeated_channels_equal_the_transcription():
    """VIFB's infrared images are gray stored as three equal channels: Qcb, Qcv, SSIM and Qabf then
    filter each repeated image once per call. A visible channel equal to a fused one is shared too (across roles);
    a mix-up of the shared planes between images or channels would change the values."""
    shape = (66, 75)  # large enough for Qcb's frequency-domain path
    vi, fused = _texture(1, shape, True), _texture(3, shape, True)
    ir = np.repeat(_texture(2, shape, False)[..., None], 3, axis=2)
    fused[..., 2] = vi[..., 2]
    fused[0, :, 0] = vi[0, :, 0]  # an equal first row alone must not be taken for an equal image
    ours = vifb_scores(vi, ir, fused, ["Qcb", "Qcv", "SSIM", "Qabf"])
    for name in ("Qcb", "Qcv", "SSIM", "Qabf"):
        tolerance = 1e-6 if name == "Qabf" else 1e-9  # see test_fast_metrics_equal_the_transcription
        assert ours[name] == pytest.approx(REFERENCE[name](vi, ir, fused), rel=tolerance), name
    # The per-channel values differ, so the average is not one channel's value repeated.
    channels = [vifb_scores(vi[..., k], ir[..., k], fused[..., k], ["Qcb"])["Qcb"] for k in range(3)]
    assert len({round(value, 9) for value in channels}) == 3
    assert ours["Qcb"] == pytest.approx(np.mean(channels), rel=1e-12)


def test_shared_planes_give_each_triples_own_value():
    """qabf_numpy_many and ssim_means_numpy_many compute a plane shared by several triples once: each
    value must still be the one computed for its triple alone (a shared plane overwritten by the
    first triple's arithmetic, or an index mix-up between distinct planes, would change it)."""
    shape = (70, 83)
    ir = _texture(2, shape, False)
    fused = [_texture(10 + k, shape, False) for k in range(3)]
    vi = [_texture(20 + k, shape, False) for k in range(3)]
    triples = [(f, ir, v) for f, v in zip(fused, vi)]
    alone = [qabf_numpy(*triple) for triple in triples]
    assert len({round(value, 9) for value in alone}) == 3
    assert qabf_numpy_many(triples) == pytest.approx(alone, rel=1e-12)
    planes = [[image.astype(np.float64) for image in triple] for triple in triples]
    groups = [(f, [v, planes[0][1]]) for f, _, v in planes]  # one infrared array object for all
    options = (255.0, "gaussian", 11, 1.5, 0.01, 0.03, False)
    together = ssim_means_numpy_many(groups, *options)
    for (x, ys), means in zip(groups, together):
        assert means == pytest.approx(ssim_means_numpy(x, ys, *options), rel=1e-12)


@pytest.mark.parametrize("height", [37, 41, 9])
def test_qabf_reads_8_bit_rows_in_place_as_the_padded_copy_would(monkeypatch, height):
    """uint8 images are read band by band in place (the first and last band through a zeroed
    buffer): the values must be those of the zero-padded float32 copy that other inputs get, with
    bands of 10 rows, so that first, inner and last bands and a last band of 1 row all occur."""
    from mmdrfuse.metrics import filters

    width = 45
    monkeypatch.setattr(filters, "BAND_PIXELS", 10 * width)
    images = [_texture(seed, (height, width), False) for seed in (1, 2, 3)]
    images[1][: height // 2] = 0  # zero gradients in part of a source
    images[2][-1] = 255  # a saturated last row: its edge against the zero padding
    triples = [tuple(images), (images[1], images[0], images[2])]
    in_place = qabf_numpy_many(triples)
    padded = qabf_numpy_many([tuple(image.astype(np.float64) for image in triple) for triple in triples])
    assert in_place == pytest.approx(padded, rel=1e-13)
    assert in_place[0] != pytest.approx(in_place[1], rel=1e-6)


@pytest.mark.parametrize("shape", [(37, 53, 3), (11, 12, 3), (20, 31)])
def test_spatial_frequency_of_8_bit_bands_is_that_of_the_wide_image(shape):
    """SF of uint8 bands sums their integer differences band by band plus the seams: the same
    double as the float64 wide image [R G B] gives, and the transcription's value."""
    fused = _texture(5, shape[:2], len(shape) == 3)
    assert spatial_frequency(fused) == spatial_frequency(fused.astype(np.float64))
    assert spatial_frequency(fused) == pytest.approx(REFERENCE["SF"](None, None, fused), rel=1e-12)
    if len(shape) == 3:  # constant bands of different levels: only the seams change
        bands = np.zeros(shape, np.uint8)
        bands[..., 1], bands[..., 2] = 200, 7
        seams = (200**2 + 193**2) * shape[0]
        assert spatial_frequency(bands) == pytest.approx(math.sqrt(seams / bands.size), rel=1e-15)


def test_spatial_frequency_of_a_vifb_image_is_exact():
    """On this image OpenCV's norm of 8-bit planes rounds its sum of squares (1 ulp in SF): the
    integer sums must give the float64 wide image's value."""
    fused = read_as_stored(shared_path("datasets", "VIFB", "fused", "CNN", "snow.jpg"))
    assert spatial_frequency(fused) == spatial_frequency(fused.astype(np.float64))


def test_equal_planes_are_shared_and_only_those():
    ir_plane = _texture(2, (20, 30), False)
    almost = ir_plane.copy()
    almost[-1, -1] ^= 1  # the first row equal, the plane not
    triples = _share_equal([(ir_plane, ir_plane.copy(), almost), (almost.copy(), ir_plane.copy(), ir_plane)])
    assert triples[0][1] is triples[0][0] and triples[1][1] is triples[0][0] and triples[1][2] is triples[0][0]
    assert triples[0][2] is not triples[0][0] and triples[1][0] is triples[0][2]


def test_colour_rules_reach_the_values():
    """Each colour rule changes the numbers, so the transcription's agreement above tests it."""
    vi, ir, fused = _texture(1, (40, 48), True), _texture(2, (40, 48), True), _texture(3, (40, 48), True)
    # SF walks the channels side by side: the seams count, so it is not the mean of per-channel SFs.
    per_channel = np.mean([vifb_scores(vi[..., k], ir[..., k], fused[..., k], ["SF"])["SF"] for k in range(3)])
    assert vifb_scores(vi, ir, fused, ["SF"])["SF"] != pytest.approx(per_channel, rel=1e-6)
    # A gray fused image: SSIM sees rgb2gray rounded to uint8, PSNR the unrounded one.
    gray = fused[..., 0]
    rounded, exact = fast_rgb2gray(vi, rounded=True), fast_rgb2gray(vi, rounded=False)
    assert not np.array_equal(rounded, exact) and np.abs(rounded - exact).max() <= 0.5
    with_colour = vifb_scores(vi, ir, gray, ["SSIM", "PSNR"])
    assert with_colour["SSIM"] == pytest.approx(vifb_scores(rounded, fast_rgb2gray(ir, rounded=True), gray, ["SSIM"])["SSIM"], rel=1e-12)
    assert with_colour["PSNR"] == pytest.approx(vifb_scores(exact, fast_rgb2gray(ir, rounded=False), gray, ["PSNR"])["PSNR"], rel=1e-12)


def test_rgb2gray_is_matlabs():
    pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 255, 255]]], np.uint8)
    # MATLAB: rgb2gray(uint8(...)) -> 76 150 29 226 255
    assert fast_rgb2gray(pixels, rounded=True).tolist() == [[76, 150, 29, 226, 255]]
    assert fast_rgb2gray(pixels, rounded=False)[0, 0] == pytest.approx(0.298936021293775 * 255, rel=1e-12)
    assert np.array_equal(fast_rgb2gray(pixels, rounded=True), rgb2gray(pixels))


def test_normalize1_rounds_half_away_and_keeps_black():
    image = np.array([[10, 11, 12], [13, 14, 20]], np.uint8)
    # (x - 10) / 10 * 255: 25.5 -> 26, 51, 76.5 -> 77, 102, 255
    assert normalize1(image).tolist() == [[0, 26, 51], [77, 102, 255]]
    assert normalize1(image.astype(np.float64)).tolist() == normalize1(image).tolist()
    assert not normalize1(np.zeros((4, 4), np.uint8)).any()


def test_degenerate_images():
    shape = (40, 40)
    flat = np.full(shape, 90, np.uint8)
    texture = _texture(4, shape, False)
    m = vifb_scores(texture, texture, flat)
    for name in ("EN", "SD", "AG", "EI", "SF"):
        assert m[name] == 0.0, name
    assert m["MI"] == 0.0  # a constant image carries no information
    assert math.isnan(m["Qcb"])  # normalize1 of a constant non-zero image is 0 / 0, as in MATLAB
    identical = vifb_scores(texture, texture, texture)
    assert identical["RMSE"] == 0.0 and identical["PSNR"] == math.inf and identical["CE"] == 0.0
    assert identical["SSIM"] == pytest.approx(2.0) and identical["Qcv"] == 0.0
    black = np.zeros(shape, np.uint8)
    assert math.isnan(vifb_scores(black, black, texture, ["Qabf"])["Qabf"])  # MATLAB's 0 / 0
    assert vifb_scores(flat, flat, texture, ["Qabf"])["Qabf"] > 0  # zero padding: a flat image has border edges
    assert identical["MI"] == pytest.approx(2 * vifb_scores(texture, texture, texture, ["EN"])["EN"] * math.log(2))


def test_combinations_vifb_cannot_score_are_errors():
    colour, gray = _texture(1, (32, 32), True), _texture(2, (32, 32), False)
    with pytest.raises(ValueError, match="gray visible"):
        vifb_scores(gray, colour, colour)
    with pytest.raises(ValueError, match="Qcb"):
        vifb_scores(colour, colour, gray, ["SSIM", "Qcb"])
    assert set(vifb_scores(colour, colour, gray, ["SSIM", "PSNR"])) == {"SSIM", "PSNR"}
    with pytest.raises(ValueError, match="sizes differ"):
        vifb_scores(colour, colour, colour[:30])


def test_metric_names_per_convention():
    assert parse_metrics("vifb", "vifb") == VIFB_METRICS == parse_metrics("all", "vifb")
    assert parse_metrics("ssim,qcb", "vifb") == ("SSIM", "Qcb")
    with pytest.raises(ValueError, match="need --convention vifb"):
        parse_metrics("Qcb", "mmif")
    with pytest.raises(ValueError, match="SCD"):
        parse_metrics("paper", "vifb")
    with pytest.raises(ValueError, match="unknown convention"):
        parse_metrics("all", "matlab")
    # evaluate_pair keeps the mmif argument order (fused, ir, vi)
    vi, ir, fused = _texture(1, (32, 32), True), _texture(2, (32, 32), True), _texture(3, (32, 32), True)
    assert evaluate_pair(fused, ir, vi, ["CE", "Qabf"], convention="vifb") == vifb_scores(vi, ir, fused, ["CE", "Qabf"])


def _write_folders(tmp_path, vi_colour=True):
    for folder in ("vi", "ir", "fused"):
        (tmp_path / folder).mkdir()
    for i, stem in enumerate(("a", "b")):
        vi = _texture(10 + i, (36, 44), vi_colour)
        cv2.imwrite(str(tmp_path / "vi" / f"{stem}.png"), vi if vi.ndim == 2 else vi[..., ::-1])
        cv2.imwrite(str(tmp_path / "ir" / f"{stem}.png"), _texture(20 + i, (36, 44), False))
        cv2.imwrite(str(tmp_path / "fused" / f"{stem}.png"), _texture(30 + i, (36, 44), True))


def test_cli_vifb_outputs(tmp_path):
    _write_folders(tmp_path)
    code = main([
        "evaluate", "--convention", "vifb", "--fused", str(tmp_path / "fused"), "--ir", str(tmp_path / "ir"),
        "--vi", str(tmp_path / "vi"), "--json", str(tmp_path / "out.json"), "--no-progress",
    ])
    assert code == 0
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["n"] == 2 and [row["name"] for row in data["per_image"]] == ["a", "b"]
    assert list(data["per_image"][0])[1:] == list(VIFB_METRICS)  # the default list under vifb: its 13
    vi = cv2.imread(str(tmp_path / "vi" / "a.png"))[..., ::-1]
    ir = cv2.imread(str(tmp_path / "ir" / "a.png"), cv2.IMREAD_UNCHANGED)
    fused = cv2.imread(str(tmp_path / "fused" / "a.png"))[..., ::-1]
    expected = vifb_scores(vi, ir, fused)
    assert data["per_image"][0]["Qcv"] == pytest.approx(expected["Qcv"], rel=1e-12)


def test_folder_with_gray_visible_and_colour_fused_is_one_data_error(tmp_path):
    _write_folders(tmp_path, vi_colour=False)
    with pytest.raises(DataError, match=r"a\.png.*gray visible"):
        evaluate_folders(tmp_path / "fused", tmp_path / "ir", tmp_path / "vi", convention="vifb", progress=False)
    fused_only = evaluate_folders(
        tmp_path / "fused", tmp_path / "ir", tmp_path / "vi", convention="vifb", metrics=["AG", "SF"], progress=False
    )
    assert fused_only["n"] == 2


def test_bad_input_is_one_data_error_naming_the_file(tmp_path):
    _write_folders(tmp_path)
    (tmp_path / "fused" / "b.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"b\.png"):
        evaluate_folders(tmp_path / "fused", tmp_path / "ir", tmp_path / "vi", convention="vifb", progress=False)
    for folder in ("vi", "ir", "fused"):
        cv2.imwrite(str(tmp_path / folder / "b.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"b\.png.*11x11"):
        evaluate_folders(tmp_path / "fused", tmp_path / "ir", tmp_path / "vi", convention="vifb", progress=False)
    with pytest.raises(ValueError, match="CPU only"):
        evaluate_folders(tmp_path / "fused", tmp_path / "ir", tmp_path / "vi", convention="vifb", device="cuda")
