import numpy as np
import pytest
import torch

from mmdrfuse.cli import main
from mmdrfuse.data.io import match_pairs, read_gray, write_image_atomic
from mmdrfuse.errors import DataError
from mmdrfuse.files import atomic_directory
from mmdrfuse.fusion.networks import Student, Teacher, count_parameters, load_model
from mmdrfuse.fusion.scaling import to_uint8
from mmdrfuse.metrics.gmsd import gmsd
from mmdrfuse.metrics.ssim import ssim


def test_student_has_113_parameters_and_released_keys():
    student = Student()
    assert count_parameters(student) == 113
    assert sorted(student.state_dict()) == ["conv1.1.bias", "conv1.1.weight", "conv2.1.bias", "conv2.1.weight"]


def test_released_weights_load_strictly(official_weights):
    assert count_parameters(load_model("student", official_weights["student"])) == 113
    teacher = load_model("teacher", official_weights["teacher"])
    out, feature = teacher(torch.rand(1, 2, 31, 17))  # odd sizes: padded and cropped back
    assert out.shape == (1, 1, 31, 17) and feature.shape == (1, 4, 31, 17)


def test_teacher_odd_size_matches_even_interior():
    torch.manual_seed(0)
    teacher = Teacher().eval()
    x = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        full = teacher(x)[0]
        odd = teacher(x[..., :31, :31])[0]
    assert odd.shape[-2:] == (31, 31)
    # reflect-padding the odd image changes only the border region
    assert torch.allclose(full[..., :20, :20], odd[..., :20, :20], atol=1e-2)


def test_ssim_identical_is_one_and_matches_skimage():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.random((40, 50))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    ta, tb = (torch.from_numpy(v)[None, None] for v in (a, b))
    assert torch.allclose(ssim(ta, ta), torch.ones(1, dtype=torch.float64))
    ours = ssim(ta, tb, data_range=2.0, window="uniform", window_size=7, sample_covariance=True).item()
    ref = skimage_metrics.structural_similarity(a, b, data_range=2.0)
    assert ours == pytest.approx(ref, abs=1e-9)


def test_gmsd_zero_for_identical_and_positive_otherwise():
    torch.manual_seed(0)
    a = torch.rand(2, 1, 32, 32)
    assert torch.allclose(gmsd(a, a), torch.zeros(2), atol=1e-6)
    assert (gmsd(a, a.flip(-1)) > 0.01).all()


def test_minmax_scaling_is_bytescale():
    image = np.array([[-0.5, 0.0], [0.25, 0.5]])
    assert to_uint8(image, "minmax").tolist() == [[0, 128], [191, 255]]
    assert to_uint8(image, "clip").tolist() == [[0, 0], [64, 128]]


def test_pairs_missing_partner_named(tmp_path):
    (tmp_path / "ir").mkdir(), (tmp_path / "vi").mkdir()
    img = np.zeros((4, 4), np.uint8)
    write_image_atomic(tmp_path / "ir" / "a.png", img)
    write_image_atomic(tmp_path / "ir" / "b.png", img)
    write_image_atomic(tmp_path / "vi" / "a.png", img)
    with pytest.raises(DataError, match="b.png"):
        match_pairs(tmp_path / "ir", tmp_path / "vi")
    pairs, missing = match_pairs(tmp_path / "ir", tmp_path / "vi", allow_missing=True)
    assert [p[0] for p in pairs] == ["a"] and len(missing) == 1


def test_corrupt_image_named(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.jpg"):
        read_gray(bad)


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "out") as staging:
            (staging / "half.txt").write_text("x")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_cli_without_command_lists_every_command(capsys):
    assert main([]) == 2
    listed = capsys.readouterr().out
    for command in ("prepare", "validate", "fuse", "train", "evaluate", "bench", "export", "detect", "pipeline", "demo"):
        assert f"    {command} " in listed or f"    {command}\n" in listed, command


def test_config_file_supplies_required_options_and_is_checked(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("root: /nonexistent-llvip\nout: OUT\n")
    assert main(["prepare", "patches", "--config", str(config)]) == 2
    assert "/nonexistent-llvip" in capsys.readouterr().err  # got past argparse's required check
    config.write_text("scaling: sqrt\n")
    assert main(["fuse", "--config", str(config)]) == 2
    assert "scaling must be one of" in capsys.readouterr().err


def test_training_defaults_are_the_papers_recipe():
    from mmdrfuse.config import defaults

    teacher, student = defaults("train_teacher"), defaults("train_student")
    assert (teacher["epochs"], teacher["batch"], teacher["lr"]) == (8, 36, 1e-4)
    assert (student["epochs"], student["batch"], student["lr"]) == (10, 26, 1e-4)
    weights = ("intensity_weight", "perception_weight", "gradient_weight")
    assert tuple(teacher[k] for k in weights) == (2.0, 1.0, 0.1)
    assert tuple(student[k] for k in weights) == (1.0, 2.0, 0.1)
    assert student["distill"] == "digestible" and student["distill_weight"] == 5.0
    assert teacher["recipe"] == student["recipe"] == "paper"
    from mmdrfuse.fusion.recipes import training_config

    assert training_config("teacher", {})["refresh"] == training_config("student", {})["refresh"] == "sample"
    assert teacher["refresh_weight"] == student["refresh_weight"] == 10.0

