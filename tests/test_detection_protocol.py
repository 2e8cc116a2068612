"""The paper's detection protocol as defaults, method parsing, classical fusion, report wording."""
import numpy as np
import pytest

from mmdrfuse.cli import build_parser
from mmdrfuse.detection import methods
from mmdrfuse.detection.report import fused_vs_single_sentence
from mmdrfuse.errors import DataError
from mmdrfuse.fusion.classical import fuse_average, fuse_laplacian, fuse_max


def test_detect_defaults_are_the_papers_protocol(tmp_path):
    args = build_parser().parse_args(["detect", "--root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert (args.model, args.epochs, args.batch, args.optimizer, args.imgsz) == ("yolov5s.yaml", 3, 16, "SGD", 640)
    assert (args.train, args.val) == (2000, 250)
    assert args.weights == "yolov5su.pt"


def test_every_default_can_be_overridden(tmp_path):
    args = build_parser().parse_args([
        "detect", "--root", str(tmp_path), "--out", "o", "--model", "yolov5n.yaml", "--weights", "none",
        "--epochs", "1", "--batch", "4", "--imgsz", "320", "--device", "cpu", "--seed", "3", "--train", "10", "--val", "5",
    ])
    assert (args.model, args.weights, args.epochs, args.batch, args.imgsz, args.device, args.seed, args.train, args.val) == (
        "yolov5n.yaml", "none", 1, 4, 320, "cpu", 3, 10, 5)


def test_method_parsing(tmp_path):
    assert methods.parse_method(f"mine={tmp_path}") == ("mine", tmp_path)
    with pytest.raises(DataError, match="NAME=DIR"):
        methods.parse_method(str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        methods.parse_method(f"mine={tmp_path / 'missing'}")
    assert methods.parse_builtins("infrared, max") == ["infrared", "max"]
    with pytest.raises(DataError, match="unknown built-in"):
        methods.parse_builtins("infrared,median")


def test_classical_fusion_values():
    ir = np.array([[0, 255, 100]], np.uint8)
    vi = np.array([[255, 0, 51]], np.uint8)
    assert fuse_average(ir, vi).tolist() == [[128, 128, 76]]
    assert fuse_max(ir, vi).tolist() == [[255, 255, 100]]
    with pytest.raises(ValueError, match="shape"):
        fuse_max(ir, vi[:, :2])


def test_laplacian_fusion_of_an_image_with_itself_is_the_image():
    image = np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)  # odd sizes on purpose
    np.testing.assert_array_equal(fuse_laplacian(image, image), image)


def test_laplacian_fusion_keeps_the_stronger_detail():
    flat = np.full((64, 64), 100, np.uint8)
    edge = flat.copy()
    edge[:, 32:] = 200
    fused = fuse_laplacian(flat, edge).astype(int)
    # The step survives (about half its height: the base is averaged, the detail kept whole).
    assert fused[:, 40:].mean() - fused[:, :24].mean() > 40


def test_report_sentence_follows_the_numbers():
    row = lambda v: {"map50_95": v}  # noqa: E731
    good = {"infrared": row(0.3), "visible": row(0.2), "max": row(0.5), "average": row(0.4)}
    assert fused_vs_single_sentence(good).startswith("Every fused method beats both")
    mixed = {"infrared": row(0.3), "visible": row(0.2), "max": row(0.5), "average": row(0.25)}
    assert fused_vs_single_sentence(mixed).startswith("1 of 2 fused methods beat")
    bad = {"infrared": row(0.6), "visible": row(0.2), "max": row(0.5)}
    assert fused_vs_single_sentence(bad).startswith("No fused method beats")


def test_short_run_protocol_is_stated():
    from mmdrfuse.detection.yolo_train import effective_protocol

    paper = {"epochs": 3, "close_mosaic": 10, "mosaic": 1.0, "warmup_epochs": 3.0, "amp": True}
    stated = effective_protocol(paper, device="cpu")
    # ultralytics' defaults in a 3-epoch run: mosaic never on, warm-up capped at 2 epochs, no AMP on a CPU
    assert (stated["mosaic_epochs"], stated["warmup_epochs_used"], stated["amp_used"]) == (0, 2.0, False)
    assert effective_protocol({**paper, "close_mosaic": 0}, device="0")["mosaic_epochs"] == 3
    assert effective_protocol({**paper, "close_mosaic": 1}, device="0")["mosaic_epochs"] == 2
    assert effective_protocol({**paper, "close_mosaic": 0, "mosaic": 0.0}, device="0")["mosaic_epochs"] == 0
    assert effective_protocol({**paper, "epochs": 1}, device="0")["warmup_epochs_used"] == 0.0
    assert effective_protocol(paper, device="0")["amp_used"] is True


def test_protocol_settings_are_yaml_defaults_cache_keys_and_arguments():
    import inspect

    from mmdrfuse.config import defaults
    from mmdrfuse.detection.yolo_train import PROTOCOL_KEYS, train_detector

    parameters = inspect.signature(train_detector).parameters
    for key in ("close_mosaic", "warmup_epochs", "mosaic", "amp"):
        assert key in PROTOCOL_KEYS
        assert defaults("detect")[key] == parameters[key].default  # one default, not two that drift


def test_scratch_training_warning():
    from mmdrfuse.detection.yolo_train import scratch_warning

    message = scratch_warning(None, 3)
    assert "\n" not in message and "from scratch" in message and "3 epoch" in message
    assert scratch_warning("yolov5su.pt", 3) is None and scratch_warning(None, 4) is None
