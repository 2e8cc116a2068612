"""``mmdrfuse bench`` (Table 3) and ``mmdrfuse export`` (ONNX)."""
import json

import numpy as np
import pytest
import torch

from mmdrfuse.cli import main
from mmdrfuse.fusion.bench import MODEL_NAMES, count_macs, parse_size
from mmdrfuse.fusion.export import export_onnx
from mmdrfuse.fusion.networks import MODELS, Student, Teacher, load_model


def test_bench_and_export_offer_every_network():
    # spelled out in bench (so that --help need not import torch): must follow networks.MODELS
    assert MODEL_NAMES == tuple(MODELS)


def test_student_macs_are_the_papers_0142_g():
    macs = count_macs(Student(), 1024, 1280)
    assert macs == 108 * 1280 * 1024
    assert round(macs / 1e9, 3) == 0.142


def test_teacher_macs_from_layer_shapes():
    # full resolution: conv1 2->32, conv2 32->32, conv22 96->32, conv11 64->4, conv00 4->1;
    # half resolution: conv3 64, conv4 64, conv5 128, conv6 192, conv66 64, conv55/44/33 128 (all ->64)
    full = 9 * (2 * 32 + 32 * 32 + 96 * 32 + 64 * 4 + 4 * 1)
    half = 9 * 64 * (64 + 64 + 128 + 192 + 64 + 128 + 128 + 128)
    assert count_macs(Teacher(), 64, 48) == full * 64 * 48 + half * 32 * 24
    # odd sizes run on the even padding: 65x49 costs what 66x50 does
    assert count_macs(Teacher(), 65, 49) == count_macs(Teacher(), 66, 50)


@pytest.mark.parametrize("text,expected", [("1280x1024", (1280, 1024)), ("64X48", (64, 48))])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["1280", "axb", "1x5", "12x10x3"])
def test_parse_size_rejects_bad_text(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_bench_cli_writes_table_json_and_markdown(tmp_path, capsys):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    code = main(["bench", "--size", "40x30", "--repeats", "2", "--teacher-repeats", "1", "--warmup", "1",
                 "--json", str(out_json), "--markdown", str(out_md)])
    assert code == 0
    result = json.loads(out_json.read_text())
    student, teacher = result["student"], result["teacher"]
    assert student["params"] == 113 and abs(student["size_kb"] - 113 * 4 / 1024) < 1e-3
    assert student["gmacs_40x30"] == round(108 * 40 * 30 / 1e9, 4)
    assert teacher["params"] == sum(p.numel() for p in Teacher().parameters())
    for row in (student, teacher):
        assert row["cpu_ms"] > 0 and row["cpu_ms_reference"] > 0
        assert row["speedup_cpu"] == pytest.approx(row["cpu_ms_reference"] / row["cpu_ms"], rel=0.02, abs=0.005)  # speedup is rounded to 2 decimals
        assert row["cpu_max_abs_diff"] < 1e-4  # the fast paths compute the same network
        assert "cuda_ms" not in row
    assert result["device"] and result["threads"] >= 1
    table = out_md.read_text()
    assert "| student | 113 |" in table and "| teacher |" in table
    assert "| student | 113 |" in capsys.readouterr().out


def test_bench_times_the_student_on_real_pairs(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for folder in ("ir", "vi"):
        (tmp_path / folder).mkdir()
        for stem, (height, width) in {"a": (31, 17), "b": (20, 45)}.items():
            cv2.imwrite(str(tmp_path / folder / f"{stem}.png"), rng.integers(0, 256, (height, width), dtype=np.uint8))
    out_json = tmp_path / "bench.json"
    assert main(["bench", "--size", "16x12", "--models", "student", "--repeats", "1", "--ir", str(tmp_path / "ir"),
                 "--vi", str(tmp_path / "vi"), "--json", str(out_json)]) == 0
    pairs = json.loads(out_json.read_text())["pairs"]
    assert pairs["count"] == 2 and pairs["pixels"] == 31 * 17 + 20 * 45
    assert pairs["max_abs_diff"] < 1e-5 and pairs["student_fast_total_ms"] > 0


def test_bench_rejects_unknown_model():
    assert main(["bench", "--size", "8x8", "--models", "student,vit"]) == 2


def onnx_session(path):
    onnxruntime = pytest.importorskip("onnxruntime")
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", ["student", "teacher"])
def test_onnx_export_has_dynamic_odd_and_even_sizes(tmp_path, name):
    pytest.importorskip("onnx")
    torch.manual_seed(1)
    model = (Student() if name == "student" else Teacher()).eval()
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, path, opset=17)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    session = onnx_session(path)
    sizes = [(2, 2), (31, 17), (48, 64), (1, 3, 7)] if name == "student" else [(31, 17), (48, 64), (3, 5)]
    for size in sizes:
        batch, (height, width) = (size[0], size[1:]) if len(size) == 3 else (2, size)
        images = torch.rand(batch, 2, height, width)
        with torch.no_grad():
            expected = model(images)[0].numpy()
        got = session.run(["fused"], {"images": images.numpy()})[0]
        assert got.shape == (batch, 1, height, width)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_export_cli_with_released_student_weights(tmp_path, official_weights, capsys):
    path = tmp_path / "out" / "student.onnx"
    assert main(["export", "--model", "student", "--weights", str(official_weights["student"]),
                 "--out", str(path)]) == 0
    assert "max |diff|" in capsys.readouterr().out
    student = load_model("student", official_weights["student"]).eval()
    images = torch.rand(1, 2, 301, 496)
    with torch.no_grad():
        expected = student(images)[0].numpy()
    got = onnx_session(path).run(["fused"], {"images": images.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_export_cli_needs_weights_or_an_explicit_random_init(tmp_path, capsys):
    path = tmp_path / "student.onnx"
    assert main(["export", "--model", "student", "--out", str(path)]) == 2
    assert "--weights" in capsys.readouterr().err and not path.exists()
    assert main(["export", "--model", "student", "--random-init", "--out", str(path)]) == 0
    assert "randomly initialised" in capsys.readouterr().err and path.is_file()


def test_export_cli_names_a_missing_weights_file(tmp_path, capsys):
    missing = tmp_path / "nope.model"
    assert main(["export", "--model", "teacher", "--weights", str(missing), "--out", str(tmp_path / "t.onnx")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "t.onnx").exists()
