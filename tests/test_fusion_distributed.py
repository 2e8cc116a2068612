"""Training under torchrun: patch ownership, and two gloo ranks on the CPU ending with the weights of one process."""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import settings

from mmdrfuse.data.patches import prepare_patches
from mmdrfuse.fusion.distill import attention_distance, attention_map
from mmdrfuse.fusion.distributed import World, batch_norm_distance, share_totals, world_from_environ
from mmdrfuse.fusion.recipes import epoch_order
from mmdrfuse.fusion.train import train_model

REPO = Path(__file__).resolve().parents[1]
COUNT, SIZE, BATCH, EPOCHS = 12, 32, 5, 3  # an odd global batch: the two ranks' shares always differ
RANKS = 2


def test_ranks_own_disjoint_patches_and_their_loss_weights_make_the_batch_mean():
    batch = np.array([7, 2, 9, 4, 11])
    worlds = [World(rank=r, size=3, local_rank=r) for r in range(3)]
    rows = [w.owned_rows(batch) for w in worlds]
    # each id of the batch is trained by exactly one rank, at shard row id // 3, in batch order
    assert sorted(int(row) * 3 + w.rank for w, rs in zip(worlds, rows) for row in rs) == sorted(batch.tolist())
    assert [r.tolist() for r in rows] == [[3], [2, 1], [0, 3]]
    assert [w.shard_size(11) for w in worlds] == [4, 4, 3]
    # DDP averages over 3 ranks: the weights N n_r / B must then add up to N (the one-process mean)
    weights = [w.loss_weight(len(r), len(batch)) for w, r in zip(worlds, rows)]
    assert sum(weights) == pytest.approx(3) and weights[0] == pytest.approx(3 / 5)
    one = World()
    assert one.owned_rows(batch) is batch and one.loss_weight(5, 5) == 1.0


def test_world_comes_from_torchrun_environment():
    assert world_from_environ({}) == World()
    assert world_from_environ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == World(rank=3, size=4, local_rank=1)
    with pytest.raises(RuntimeError, match="RANK"):
        world_from_environ({"WORLD_SIZE": "2"})
    with pytest.raises(RuntimeError, match="within"):
        world_from_environ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})


def _seed_with_an_empty_share() -> int:
    """A seed whose patch order gives, in some global batch, all ids to one rank (the other trains on none)."""
    for seed in range(200):
        for epoch in range(EPOCHS):
            order = epoch_order(seed, epoch, COUNT)
            batches = [order[i * BATCH : (i + 1) * BATCH] for i in range(COUNT // BATCH)]
            if any(len(set((b % RANKS).tolist())) == 1 for b in batches):
                return seed
    raise AssertionError("no seed in 0..199 gives an empty share")


SEED = _seed_with_an_empty_share()
OPTIONS = {"perceptual": "vgg19-random", "batch": BATCH, "epochs": EPOCHS, "seed": SEED, "lr": 1e-3, "device": "cpu"}


@pytest.fixture(scope="module")
def patch_store(make_shared_llvip, tmp_path_factory):
    """The 12 patches of 32x32 of one synthetic 128x96 pair, as ``mmdrfuse prepare patches`` stores them."""
    root = make_shared_llvip(train=1, test=1, size=(128, 96))
    out = tmp_path_factory.mktemp("store") / "patches"
    return prepare_patches(root, **settings("prepare_patches", pairs=1, size=SIZE, stride=SIZE), out=out, progress=False,
                           log=lambda _: None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(patch_store, out: Path, *extra: str) -> None:
    """``torchrun --nproc-per-node 2 -m mmdrfuse train teacher`` on the CPU (gloo)."""
    options = [f"--{key.replace('_', '-')}={value}" for key, value in OPTIONS.items()]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(RANKS),
               "--master-port", str(_free_port()), "-m", "mmdrfuse", "train", "teacher",
               "--patches", str(patch_store), "--out", str(out),
               "--quiet", *options, *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def one_process(patch_store, out: Path, **extra) -> Path:
    return train_model("teacher", patches=patch_store, out_dir=out,
                       progress=False, log=lambda _: None, **OPTIONS, **extra)  # fmt: skip


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert left.keys() == right.keys()
    worst = max((left[k] - right[k]).abs().max().item() for k in left)
    assert worst < 1e-5, f"weights differ by up to {worst:.3g}"
    # the weights did move: a run that trained nothing would also be equal
    initial = torch.load(a.parent / "checkpoints" / "teacher_epoch01.pth", weights_only=True)
    assert any(not torch.equal(initial[k], left[k]) for k in left)


def losses(folder: Path) -> np.ndarray:
    with open(folder / "losses.csv", newline="") as handle:
        return np.array([[float(v) for v in row] for row in list(csv.reader(handle))[1:]])


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_two_ranks_train_like_one_process(patch_store, tmp_path):
    torchrun(patch_store, tmp_path / "ranks")
    one_process(patch_store, tmp_path / "one")
    assert_same_weights(tmp_path / "ranks" / "teacher.pth", tmp_path / "one" / "teacher.pth")
    # the logged loss terms are the global batch's, not rank 0's share
    np.testing.assert_allclose(losses(tmp_path / "ranks"), losses(tmp_path / "one"), rtol=1e-4, atol=1e-6)
    meta = json.loads((tmp_path / "ranks" / "teacher.json").read_text())
    assert meta["world_size"] == 2 and meta["completed"] is True and meta["recipe"]["batch"] == BATCH
    assert json.loads((tmp_path / "one" / "teacher.json").read_text())["world_size"] == 1


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_resumed_two_rank_run_with_the_batch_rule_ends_where_one_process_does(patch_store, tmp_path):
    # the batch rule's batch means are all-reduced: its decisions are the whole global batch's
    torchrun(patch_store, tmp_path / "ranks", "--refresh=batch", "--max-steps=3")  # stops in epoch 2: the bank is in use
    assert (tmp_path / "ranks" / "teacher_partial.pth").exists() and not (tmp_path / "ranks" / "teacher.pth").exists()
    state = torch.load(tmp_path / "ranks" / "last_state.pt", weights_only=True)
    assert state["world_size"] == 2 and state["global_step"] == 3
    assert state["bank"]["best_ssim"].shape == (COUNT, 1, SIZE, SIZE)  # gathered whole, in patch-id order
    torchrun(patch_store, tmp_path / "ranks", "--refresh=batch", "--resume")
    one_process(patch_store, tmp_path / "one", refresh="batch")
    assert_same_weights(tmp_path / "ranks" / "teacher.pth", tmp_path / "one" / "teacher.pth")
    np.testing.assert_allclose(losses(tmp_path / "ranks"), losses(tmp_path / "one"), rtol=1e-4, atol=1e-6)
    assert not (tmp_path / "ranks" / "teacher_partial.pth").exists()


def test_batch_distillation_norm_split_over_shares_is_the_whole_batchs():
    # --distill-norm batch divides by the norms of the whole batch: each rank's share, given the
    # all-reduced totals, must give the whole batch's value and, weighted by n_r / B, its gradient
    torch.manual_seed(0)
    student = torch.randn(7, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(7, 3, 4, 4, dtype=torch.float64)
    whole = attention_distance(student, teacher, norm="batch")
    (expected,) = torch.autograd.grad(whole, student)
    shares = [torch.tensor([0, 3, 4]), torch.tensor([], dtype=torch.long), torch.tensor([1, 2, 5, 6])]
    maps = [(attention_map(student[i]), attention_map(teacher[i])) for i in shares]
    totals = sum(share_totals(s, t) for s, t in maps)
    values = [batch_norm_distance(s, t, totals) for s, t in maps]
    assert all(v.item() == pytest.approx(whole.item(), rel=1e-6) for v in values)
    combined = sum(len(i) / 7 * v for i, v in zip(shares, values) if len(i))
    (got,) = torch.autograd.grad(combined, student)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
