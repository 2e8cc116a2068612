"""Fusion of folders: sizes, scaling, colour, engines, bad input, and the released weights' numbers."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import shared_path
from helpers import settings, write_pairs

from mmdrfuse.cli import main
from mmdrfuse.data.io import read_gray
from mmdrfuse.errors import DataError
from mmdrfuse.fusion.infer import fuse_arrays, fuse_folder, load_fusion_model
from mmdrfuse.fusion.networks import Student
from mmdrfuse.fusion.scaling import to_uint8


@pytest.mark.parametrize("engine", ["eager", "fast"])
def test_fuse_folder_feeds_infrared_as_channel_0(tmp_path, engine):
    # A student that passes channel 0 through its centre taps: the output must be the --ir image.
    student = Student()
    with torch.no_grad():
        for p in student.parameters():
            p.zero_()
        student.conv1[1].weight[0, 0, 1, 1] = 1.0
        student.conv2[1].weight[0, 0, 1, 1] = 1.0
    torch.save(student.state_dict(), tmp_path / "pass_ir.pth")
    ir_dir, vi_dir = write_pairs(tmp_path, [(13, 11)])
    fuse_folder(**settings("fuse", weights=tmp_path / "pass_ir.pth", device="cpu", scaling="clip", engine=engine),
                ir_dir=ir_dir, vi_dir=vi_dir, out_dir=tmp_path / "out", progress=False)
    ir = read_gray(ir_dir / "000.png")
    expected = to_uint8(np.tanh(ir / 255.0), "clip")
    assert np.abs(read_gray(tmp_path / "out" / "000.png").astype(int) - expected).max() <= 1


def fuse(weights, ir_dir, vi_dir, out_dir, *, stems=None, **options):
    """``fuse_folder`` with the ``fuse`` command's settings (default.yaml) and ``options``, quiet."""
    return fuse_folder(**settings("fuse", weights=weights, **options), ir_dir=ir_dir, vi_dir=vi_dir, out_dir=out_dir,
                       stems=stems, progress=False)


@pytest.mark.parametrize("model", ["student", "teacher"])
def test_outputs_at_input_size_equal_manual_inference(tmp_path, random_weights, model):
    ir_dir, vi_dir = write_pairs(tmp_path, [(17, 23), (17, 23), (17, 23), (20, 9)], color_vi=True)
    weights = random_weights(model)
    result = fuse(weights, ir_dir, vi_dir, tmp_path / "out", model=model, device="cpu", batch=2, engine="eager")
    assert result["n"] == 4 and result["seconds"] > 0 and result["seconds_per_image"] == result["seconds"] / 4
    net = load_fusion_model(model, weights)
    for stem in ("000", "003"):
        out = cv2.imread(str(tmp_path / "out" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        ir, vi = read_gray(ir_dir / f"{stem}.png"), read_gray(vi_dir / f"{stem}.png")
        assert out.shape == ir.shape and out.dtype == np.uint8
        expected = to_uint8(fuse_arrays(net, ir[None], vi[None])[0], "minmax")
        assert np.abs(out.astype(int) - expected).max() <= 1  # batched vs single: float noise at most
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".mmdrfuse.json", "000.png", "001.png", "002.png", "003.png"]


def test_clip_scaling_keeps_the_raw_output(tmp_path, random_weights):
    ir_dir, vi_dir = write_pairs(tmp_path, [(16, 16)], color_vi=True)
    fuse(random_weights(), ir_dir, vi_dir, tmp_path / "o", scaling="clip", engine="eager")
    raw = fuse_arrays(load_fusion_model("student", random_weights()), read_gray(ir_dir / "000.png"), read_gray(vi_dir / "000.png"))[0]
    out = cv2.imread(str(tmp_path / "o" / "000.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(out, np.clip(raw * 255 + 0.5, 0, 255).astype(np.uint8))


def test_fast_engine_matches_eager(tmp_path, random_weights):
    pytest.importorskip("mmdrfuse.fusion.fast_student")
    ir_dir, vi_dir = write_pairs(tmp_path, [(31, 45), (31, 45)], color_vi=True)
    for engine in ("eager", "fast"):
        result = fuse(random_weights(), ir_dir, vi_dir, tmp_path / engine, engine=engine, device="cpu")
        assert result["engine"] == engine
    for stem in ("000", "001"):
        a = cv2.imread(str(tmp_path / "eager" / f"{stem}.png"), cv2.IMREAD_UNCHANGED).astype(int)
        b = cv2.imread(str(tmp_path / "fast" / f"{stem}.png"), cv2.IMREAD_UNCHANGED).astype(int)
        assert np.abs(a - b).max() <= 1


def test_ycbcr_keeps_the_visible_chroma(tmp_path, random_weights):
    ir_dir, vi_dir = write_pairs(tmp_path, [(24, 30)], color_vi=True)
    fuse(random_weights(), ir_dir, vi_dir, tmp_path / "c", color="ycbcr", engine="eager")
    out = cv2.imread(str(tmp_path / "c" / "000.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (24, 30, 3)
    vi_ycrcb = cv2.cvtColor(cv2.imread(str(vi_dir / "000.png")), cv2.COLOR_BGR2YCrCb).astype(int)
    out_ycrcb = cv2.cvtColor(out, cv2.COLOR_BGR2YCrCb).astype(int)
    # chroma survives up to the rounding of two colour conversions (and gamut clipping of BGR)
    inside = (out.min(axis=2) > 0) & (out.max(axis=2) < 255)
    assert np.abs(out_ycrcb[..., 1:] - vi_ycrcb[..., 1:])[inside].max() <= 2
    # Y is the fused visible Y (= BGR2GRAY) with the IR
    net = load_fusion_model("student", random_weights())
    y = to_uint8(fuse_arrays(net, read_gray(ir_dir / "000.png"), vi_ycrcb[..., 0].astype(np.uint8))[0], "minmax")
    assert np.abs(out_ycrcb[..., 0] - y.astype(int))[inside].max() <= 2


def test_stems_restrict_to_a_subset(tmp_path, random_weights):
    ir_dir, vi_dir = write_pairs(tmp_path, [(16, 16)] * 3, color_vi=True)
    fuse(random_weights(), ir_dir, vi_dir, tmp_path / "s", stems=["002", "000"])
    assert sorted(p.name for p in (tmp_path / "s").glob("*.png")) == ["000.png", "002.png"]
    with pytest.raises(DataError, match="007"):
        fuse(random_weights(), ir_dir, vi_dir, tmp_path / "s", stems=["007"])


def fuse_cli(ir_dir, vi_dir, out, weights, *extra):
    return main(["fuse", "--model", "student", "--weights", str(weights), "--ir", str(ir_dir), "--vi", str(vi_dir),
                 "--out", str(out), "--quiet", *extra])  # fmt: skip


def test_bad_input_is_named_and_leaves_no_output(tmp_path, random_weights, capsys):
    ir_dir, vi_dir = write_pairs(tmp_path, [(16, 16)] * 4, color_vi=True)
    out = tmp_path / "out"
    w = random_weights()

    (ir_dir / "004.png").write_bytes((ir_dir / "000.png").read_bytes())  # no visible partner
    assert fuse_cli(ir_dir, vi_dir, out, w) == 2
    assert "004.png" in capsys.readouterr().err and not out.exists()
    (ir_dir / "004.png").unlink()

    cv2.imwrite(str(vi_dir / "001.png"), np.zeros((16, 18, 3), np.uint8))  # size mismatch
    assert fuse_cli(ir_dir, vi_dir, out, w) == 2
    err = capsys.readouterr().err
    assert "size mismatch" in err and "001.png" in err and not out.exists()
    cv2.imwrite(str(vi_dir / "001.png"), np.zeros((16, 16, 3), np.uint8))

    # a valid PNG header with a truncated body: only decoding finds it, after other pairs were fused
    good = (vi_dir / "003.png").read_bytes()
    (vi_dir / "003.png").write_bytes(good[: len(good) // 2])
    assert fuse_cli(ir_dir, vi_dir, out, w) == 2
    err = capsys.readouterr().err
    assert "003.png" in err and not out.exists()
    (vi_dir / "003.png").write_bytes(b"not an image at all")
    out.mkdir()  # an existing folder of other files is refused before any work and keeps what it had
    (out / "keep.txt").write_text("x")
    assert fuse_cli(ir_dir, vi_dir, out, w) == 2
    assert "not empty" in capsys.readouterr().err and [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    assert fuse_cli(ir_dir, vi_dir, out, w) == 2
    assert "003.png" in capsys.readouterr().err and list(out.iterdir()) == []
    (vi_dir / "003.png").write_bytes(good)

    assert fuse_cli(ir_dir, vi_dir, ir_dir / "fused", w) == 2  # output inside an input folder
    assert "inside" in capsys.readouterr().err and not (ir_dir / "fused").exists()

    (tmp_path / "empty").mkdir()
    assert fuse_cli(tmp_path / "empty", vi_dir, out, w) == 2
    assert "no images" in capsys.readouterr().err

    assert fuse_cli(ir_dir, vi_dir, out, w) == 0
    assert len(list(out.glob("*.png"))) == 4 and [p.name for p in out.glob(".*")] == [".mmdrfuse.json"]
    assert not list(tmp_path.glob(".out.*"))  # no staging left behind


def test_without_weights_the_error_says_to_pass_them(tmp_path):
    ir_dir, vi_dir = write_pairs(tmp_path, [(16, 16)])
    with pytest.raises(FileNotFoundError, match="--weights"):
        fuse(None, ir_dir, vi_dir, tmp_path / "o", model="teacher")
    assert not (tmp_path / "o").exists()


def sd_and_cc(out_dir: Path, ir_dir: Path, vi_dir: Path):
    sds, ccs = [], []
    for fused_path in sorted(out_dir.glob("*.png")):
        fused = read_gray(fused_path).astype(np.float64)
        a = read_gray(next(ir_dir.glob(fused_path.stem + ".*"))).astype(np.float64)
        b = read_gray(next(vi_dir.glob(fused_path.stem + ".*"))).astype(np.float64)
        sds.append(fused.std())
        ccs.append((np.corrcoef(fused.ravel(), a.ravel())[0, 1] + np.corrcoef(fused.ravel(), b.ravel())[0, 1]) / 2)
    return len(sds), float(np.mean(sds)), float(np.mean(ccs))


def test_released_student_reproduces_roadscene_sd_and_cc(tmp_path, official_weights):
    ir_dir, vi_dir = shared_path("datasets", "RoadScene", "ir"), shared_path("datasets", "RoadScene", "vi")
    assert fuse_cli(ir_dir, vi_dir, tmp_path / "out", official_weights["student"]) == 0
    n, sd, cc = sd_and_cc(tmp_path / "out", ir_dir, vi_dir)
    assert n == 50
    assert sd == pytest.approx(47.23, abs=0.05) and cc == pytest.approx(0.59, abs=0.01)


def test_released_teacher_on_odd_sized_roadscene_and_mri_pet(tmp_path, official_weights):
    for name, ir_sub, vi_sub, stems in (("RoadScene", "ir", "vi", ["FLIR_00211"]), ("MRI_PET", "PET", "MRI", ["11"])):
        ir_dir, vi_dir = shared_path("datasets", name, ir_sub), shared_path("datasets", name, vi_sub)
        fuse(official_weights["teacher"], ir_dir, vi_dir, tmp_path / name, model="teacher", stems=stems, device="cpu")
        for stem in stems:
            out = cv2.imread(str(tmp_path / name / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
            assert out.shape == read_gray(next(ir_dir.glob(stem + ".*"))).shape
            assert out.min() == 0 and out.max() == 255  # minmax stretch
