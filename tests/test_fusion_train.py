"""Training: a few steps lower the loss, student init/distillation, outputs, exact resume."""
from __future__ import annotations

import csv
import json
import types

import cv2
import numpy as np
import pytest
import torch

from mmdrfuse.cli import main
from mmdrfuse.fusion.networks import Teacher, load_model
from mmdrfuse.fusion.train import build_trainer, train_model, training_config

VGG = {"perceptual": "vgg19-random"}


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_patches(count=12, size=32, seed=0):
    """Smooth IR blobs and textured visible patches, uint8 (N, size, size)."""
    rng = np.random.default_rng(seed)
    ir = np.stack([cv2.resize(rng.random((4, 4)), (size, size), interpolation=cv2.INTER_CUBIC) for _ in range(count)])
    vi = np.stack([cv2.resize(rng.random((8, 8)), (size, size), interpolation=cv2.INTER_LINEAR) for _ in range(count)])
    to_u8 = lambda a: np.clip(a * 255, 0, 255).astype(np.uint8)  # noqa: E731
    return types.SimpleNamespace(ir=to_u8(ir), vi=to_u8(vi), names=[f"p{i}" for i in range(count)])


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    torch.save(Teacher().state_dict(), path)
    return path


def batch_of(data, n=4):
    to = lambda a: torch.from_numpy(a[:n])[:, None].float() / 255  # noqa: E731
    return to(data.ir), to(data.vi), torch.arange(n)


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_a_few_steps_lower_the_loss(kind, teacher_file):
    data = toy_patches(4)
    cfg = training_config(kind, {**VGG, "lr": 1e-3, "refresh": "off"})
    trainer = build_trainer(kind, cfg, count=4, height=32, width=32, device=torch.device("cpu"),
                            teacher_weights=teacher_file, log=lambda _: None)  # fmt: skip
    if kind == "student":
        assert torch.equal(trainer.model.conv2[1].weight, load_model("teacher", teacher_file).conv00[1].weight)
    ir, vi, idx = batch_of(data)
    logs = [trainer.step(ir, vi, idx, epoch=0) for _ in range(6)]
    assert all(np.isfinite(log["total"]) for log in logs)
    assert logs[-1]["total"] < logs[0]["total"]
    assert logs[-1]["content"] < logs[0]["content"]
    if kind == "student":
        assert logs[0]["distill"] > 0


def test_refresh_losses_appear_after_epoch_0(teacher_file):
    data = toy_patches(4)
    cfg = training_config("student", {**VGG, "lr": 1e-3})
    trainer = build_trainer("student", cfg, count=4, height=32, width=32, device=torch.device("cpu"),
                            teacher_weights=teacher_file, log=lambda _: None)  # fmt: skip
    ir, vi, idx = batch_of(data)
    first = trainer.step(ir, vi, idx, epoch=0)
    assert first["refresh_ssim"] == first["refresh_gmsd"] == 0 and first["replaced_ssim"] == 1
    # a bank better than any output (the element-wise max scores high on SSIM with both inputs)
    trainer.bank.fill(idx, torch.max(ir, vi))
    later = trainer.step(ir, vi, idx, epoch=1)
    assert later["refresh_ssim"] > 0 or later["refresh_gmsd"] > 0
    assert later["total"] == pytest.approx(later["content"] + later["distill"] + later["refresh_ssim"] + later["refresh_gmsd"], rel=1e-5)


def run(out, **overrides):
    options = {**VGG, "epochs": 2, "batch": 4, "lr": 1e-3, **overrides}
    return train_model("teacher", patches=toy_patches(12), out_dir=out, progress=False, log=lambda _: None, **options)


def test_interrupted_then_resumed_run_ends_with_the_same_weights(tmp_path):
    straight = run(tmp_path / "straight")
    stopped = run(tmp_path / "resumed", max_steps=4)  # epoch 2, step 1 of 3: the bank is in use
    assert json.loads(stopped.with_suffix(".json").read_text())["completed"] is False
    assert stopped.name == "teacher_partial.pth" and not (tmp_path / "resumed" / "teacher.pth").exists()
    resumed = run(tmp_path / "resumed", resume=True)
    assert resumed.name == "teacher.pth" and not stopped.exists()
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "straight" / "losses.csv").read_text() == (tmp_path / "resumed" / "losses.csv").read_text()
    assert json.loads(resumed.with_suffix(".json").read_text())["completed"] is True


def test_outputs_checkpoints_and_guards(tmp_path):
    final = run(tmp_path / "run")
    assert final == tmp_path / "run" / "teacher.pth"
    load_model("teacher", final)  # a plain state dict with the released key names
    meta = json.loads(final.with_suffix(".json").read_text())
    assert meta["parameters"] == 556489  # the released teacher's count
    assert meta["perceptual"].startswith("vgg19-random") and meta["seed"] == 0 and meta["recipe"]["batch"] == 4
    assert meta["mmdrfuse_version"] and meta["data"]["count"] == 12
    for epoch in (1, 2):
        load_model("teacher", tmp_path / "run" / "checkpoints" / f"teacher_epoch{epoch:02d}.pth")
    with open(tmp_path / "run" / "losses.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {"intensity", "perception", "gradient", "refresh_ssim", "refresh_gmsd"} <= set(rows[0])
    assert (tmp_path / "run" / "losses.png").stat().st_size > 0
    with pytest.raises(ValueError, match="--resume"):
        run(tmp_path / "run")
    with pytest.raises(ValueError, match="lr"):
        run(tmp_path / "run", resume=True, lr=5e-4)
    with pytest.raises(ValueError, match="unknown training option"):
        run(tmp_path / "other", learning_rate=1)
    with pytest.raises(ValueError, match="teacher"):
        train_model("student", patches=toy_patches(4), out_dir=tmp_path / "s", progress=False, **VGG)


def test_train_commands_from_patch_folders(tmp_path, teacher_file):
    data = toy_patches(6)
    for name, images in (("ir", data.ir), ("vi", data.vi)):
        (tmp_path / name).mkdir()
        for patch_name, image in zip(data.names, images):
            cv2.imwrite(str(tmp_path / name / f"{patch_name}.png"), image)
    common = ["--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"), "--batch", "3", "--epochs", "1",
              "--perceptual", "vgg19-random", "--quiet"]  # fmt: skip
    assert main(["train", "teacher", *common, "--out", str(tmp_path / "t"), "--refresh", "batch"]) == 0
    assert main(["train", "student", *common, "--out", str(tmp_path / "s"), "--teacher", str(tmp_path / "t" / "teacher.pth"),
                 "--distill", "plain", "--distill-norm", "batch", "--max-steps", "1"]) == 0  # fmt: skip
    meta = json.loads((tmp_path / "s" / "student_partial.json").read_text())  # stopped by --max-steps
    assert meta["recipe"]["distill"] == "plain" and meta["global_step"] == 1 and meta["parameters"] == 113
    assert main(["train", "student", *common, "--out", str(tmp_path / "s2")]) == 2  # no --teacher: one-line error
    # the "w/o distillation" ablation needs no teacher (conv2 then keeps its random init)
    assert main(["train", "student", *common, "--out", str(tmp_path / "s3"), "--distill", "off", "--max-steps", "1"]) == 0
