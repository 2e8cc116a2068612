"""Training: a few steps lower the loss, student init/distillation, outputs, exact resume."""
from __future__ import annotations

import csv
import dataclasses
import json
import types

import cv2
import numpy as np
import pytest
import torch

from mmdrfuse.cli import main
from mmdrfuse.fusion import train as train_module
from mmdrfuse.fusion.networks import Teacher, load_model
from mmdrfuse.fusion.recipes import epoch_order
from mmdrfuse.fusion.refresh import HistoryBank, refresh_step
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
    assert main(["train", "teacher", *common, "--out", str(tmp_path / "t"), "--recipe", "release"]) == 0
    recipe = json.loads((tmp_path / "t" / "teacher.json").read_text())["recipe"]
    assert (recipe["recipe"], recipe["refresh"], recipe["shuffle"], recipe["amp"]) == ("release", "batch", "once", False)
    assert main(["train", "student", *common, "--out", str(tmp_path / "s"), "--teacher", str(tmp_path / "t" / "teacher.pth"),
                 "--distill", "plain", "--distill-norm", "batch", "--max-steps", "1"]) == 0  # fmt: skip
    meta = json.loads((tmp_path / "s" / "student_partial.json").read_text())  # stopped by --max-steps
    assert meta["recipe"]["distill"] == "plain" and meta["global_step"] == 1 and meta["parameters"] == 113
    assert main(["train", "student", *common, "--out", str(tmp_path / "s2")]) == 2  # no --teacher: one-line error
    # the "w/o distillation" ablation needs no teacher (conv2 then keeps its random init)
    assert main(["train", "student", *common, "--out", str(tmp_path / "s3"), "--distill", "off", "--max-steps", "1"]) == 0


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_recipes_select_their_settings_and_explicit_options_win(kind):
    paper, release = training_config(kind, {}), training_config(kind, {"recipe": "release"})
    assert (paper["recipe"], paper["refresh"], paper["amp"], paper["shuffle"]) == ("paper", "sample", True, "epoch")
    # the released code: batch-mean refresh, fp32, the teacher's patch list shuffled once
    assert (release["refresh"], release["amp"]) == ("batch", False)
    assert release["shuffle"] == ("once" if kind == "teacher" else "epoch")
    if kind == "student":
        assert paper["distill_norm"] == "sample" and release["distill_norm"] == "batch"
    explicit = training_config(kind, {"recipe": "release", "refresh": "sample", "amp": True})
    assert (explicit["refresh"], explicit["amp"]) == ("sample", True)
    assert {k: v for k, v in paper.items() if k not in RECIPE_KEYS} == {k: v for k, v in release.items() if k not in RECIPE_KEYS}
    with pytest.raises(ValueError, match="recipe"):
        training_config(kind, {"recipe": "mine"})


RECIPE_KEYS = ("recipe", "refresh", "distill_norm", "amp", "shuffle")


def test_shuffle_once_visits_the_patches_in_one_order_every_epoch(tmp_path, monkeypatch):
    assert not np.array_equal(epoch_order(0, 0, 50), epoch_order(0, 1, 50))
    assert np.array_equal(epoch_order(0, 0, 50, shuffle="once"), epoch_order(0, 3, 50, shuffle="once"))
    visits = []
    feeder_call = train_module.PatchFeeder.__call__
    monkeypatch.setattr(train_module.PatchFeeder, "__call__", lambda self, chosen: visits.append(chosen.tolist()) or feeder_call(self, chosen))
    for shuffle in ("once", "epoch"):
        visits.clear()
        run(tmp_path / shuffle, refresh="off", shuffle=shuffle)  # 12 patches, batch 4: 3 steps per epoch
        first, second = visits[:3], visits[3:]
        assert sorted(sum(first, [])) == list(range(12))
        assert (first == second) == (shuffle == "once")


def test_refresh_losses_under_bf16_autocast_match_fp32():
    """On a GPU the content loss's VGG runs in bf16 (--amp); the refresh losses must not, since they
    compare an output with a bank image that differs from it by 1e-2. Checked with bf16 autocast on the CPU."""
    size, count = 64, 2
    cfg = training_config("teacher", {**VGG})
    fp32 = build_trainer("teacher", cfg, count=count, height=size, width=size, device=torch.device("cpu"), log=lambda _: None)
    with torch.no_grad():  # ImageNet-sized activations (tens at relu5_4): a ReLU net with zero biases scales linearly
        fp32.perceptual.features[0].weight.mul_(30)
    g = torch.Generator().manual_seed(0)
    ir, vi = (torch.nn.functional.interpolate(c, size=(size, size), mode="bicubic").clamp(0, 1)
              for c in torch.rand(2, count, 1, 8, 8, generator=g))  # fmt: skip
    indices = torch.arange(count)
    with torch.no_grad():
        fused, _ = fp32.model(torch.cat([ir, vi], 1))
    near = fused + 1e-2 * torch.sign(torch.max(ir, vi) - fused)  # a bank entry a little better on both scores

    def refresh(trainer, naive=False):
        trainer = dataclasses.replace(trainer, bank=HistoryBank(count, size, size))
        trainer.bank.fill(indices, near)
        out = fused.clone().requires_grad_(True)
        taps = trainer.features(out)
        if naive:  # what the taps would give if the refresh reused the bf16 content taps
            outcome = refresh_step(trainer.bank, indices, out, taps, ir, vi, epoch=1, rule="sample", weight=10,
                                   features=trainer.features)  # fmt: skip
        else:
            outcome = trainer.refresh(out, taps, ir, vi, indices, 1)
        (grad,) = torch.autograd.grad(outcome.loss_ssim + outcome.loss_gmsd, out)
        return outcome.loss_ssim.item(), outcome.loss_gmsd.item(), grad

    bf16 = dataclasses.replace(fp32, amp=True)
    assert bf16.features(fused)[4].dtype == torch.bfloat16  # the content taps really are bf16
    s32, g32, grad32 = refresh(fp32)
    s16, g16, grad16 = refresh(bf16)
    assert s32 > 0 and g32 > 0  # both refresh losses are active
    assert s16 == pytest.approx(s32, rel=1e-3) and g16 == pytest.approx(g32, rel=1e-3)
    assert (grad16 - grad32).norm() <= 1e-3 * grad32.norm()
    _, _, grad_naive = refresh(bf16, naive=True)
    assert (grad_naive - grad32).norm() > 1e-2 * grad32.norm()  # bf16 taps would be off: the check above can fail
