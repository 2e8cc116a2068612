"""Fusion training on several processes (``torchrun``): who owns which patches, and the few
reductions that make N ranks train exactly like one process.

torchrun (``python -m torch.distributed.run``) starts one process per GPU and sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; without them (or with ``WORLD_SIZE=1``) training
is the plain one-process loop, untouched. The process group is NCCL for CUDA tensors and gloo
for CPU tensors (``cpu:gloo,cuda:nccl``; gloo alone on the CPU).

Ownership: rank ``r`` of ``N`` owns the patch ids ``i`` with ``i mod N = r`` and keeps their
history-bank rows as its shard (row ``i // N``), so the bank is never synchronised during training.
Every rank walks the one-process patch order; of each global batch ``b`` of ``B`` ids, rank ``r``
trains on the ``n_r`` it owns. Its loss ``L_r`` (means over its ``n_r`` samples) is scaled by
``N n_r / B`` and DDP averages the gradients over the ``N`` ranks:

.. math::
    g = \\frac{1}{N} \\sum_r \\frac{N n_r}{B} \\nabla L_r = \\sum_r \\frac{n_r}{B} \\nabla L_r = \\nabla L,

the one-process gradient, since every loss term is a mean over the batch's samples. A rank that
owns none of a batch (``n_r = 0``) still runs the network on an empty batch, so DDP's gradient
all-reduce happens on every rank. Two terms are not means over samples, and are made global:
the ``batch`` refresh rule's batch means are all-reduced (:meth:`World.batch_means`), so its
decisions are those of the whole global batch; ``--distill-norm batch`` (the release recipe's
student) normalises by the whole global batch's norms (:func:`batch_norm_distance`).

Only rank 0 writes files; the resume state holds the whole bank in patch-id order, gathered from
the shards, so a run may resume on another number of ranks.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from mmdrfuse.fusion.checkpoints import apply_training_state, read_training_state, restore_training_state

BANK_KEYS = ("best_ssim", "best_gmsd", "filled")
_EPS = 1e-12  # as mmdrfuse.fusion.distill: a dead feature map must not divide by zero


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: ``rank`` of ``size``, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard_size(self, count: int) -> int:
        """How many of the patch ids ``0 .. count - 1`` this rank owns."""
        return len(range(self.rank, count, self.size))

    def owned_rows(self, ids: np.ndarray) -> np.ndarray:
        """Shard rows of the ids in ``ids`` this rank owns, in their order; ``ids`` itself on one process."""
        if not self.distributed:
            return ids
        return ids[ids % self.size == self.rank] // self.size

    def loss_weight(self, owned: int, batch: int) -> float:
        """``N n_r / B``: the factor that turns DDP's gradient average into the global batch's mean."""
        return 1.0 if not self.distributed else self.size * owned / batch

    def device(self, device: torch.device) -> torch.device:
        """Rank ``LOCAL_RANK``'s GPU when training on CUDA (one GPU per process), else ``device``."""
        if self.distributed and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def step_terms(self, terms: Dict[str, float], owned: int, batch: int, stop: bool):
        """The global batch's loss terms (the ranks' terms weighted by ``n_r / B``) and whether any rank
        asked to stop (Ctrl-C reaches the ranks at different steps; all must stop at the same one)."""
        names = sorted(terms)
        values = torch.tensor([terms[k] * owned / batch for k in names] + [float(stop)], dtype=torch.float64)
        dist.all_reduce(values)
        return dict(zip(names, values[:-1].tolist())), bool(values[-1] > 0)

    def batch_means(self, values: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Means over the whole global batch of per-sample values, each (n_r,) on this rank (n_r may be 0)."""
        local = torch.stack([v.detach().double().sum() for v in values] + [values[0].new_tensor(len(values[0])).double()])
        local = local.cpu()
        dist.all_reduce(local)
        sums, count = local[:-1].to(values[0].device), local[-1].item()
        return list(sums / count)

    def batch_norm_distance(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """:func:`batch_norm_distance` of this rank's share of the global batch, totals all-reduced."""
        totals = share_totals(student, teacher).cpu()
        dist.all_reduce(totals)
        return batch_norm_distance(student, teacher, totals.to(student.device))

    def gather_bank(self, shard: Mapping[str, torch.Tensor], count: int) -> Optional[Dict[str, torch.Tensor]]:
        """The whole bank (one-process layout, patch-id order) on rank 0 from every rank's shard; None elsewhere."""
        full = {}
        for key in BANK_KEYS:
            padded = _padded(shard[key], count, self.size)
            parts = [torch.empty_like(padded) for _ in range(self.size)] if self.is_main else None
            dist.gather(padded, parts, dst=0)
            if self.is_main:
                whole = torch.empty((count, *padded.shape[1:]), dtype=padded.dtype)
                for rank, part in enumerate(parts):
                    whole[rank :: self.size] = part[: len(range(rank, count, self.size))]
                full[key] = whole.bool() if key == "filled" else whole
        return full if self.is_main else None

    def scatter_bank(self, full: Optional[Mapping[str, torch.Tensor]], count: int, like: Mapping[str, torch.Tensor]):
        """This rank's shard of the whole bank ``full`` (given on rank 0 only); ``like``: this rank's shard tensors."""
        shard = {}
        for key in BANK_KEYS:
            mine = _padded(like[key], count, self.size)
            parts = None
            if self.is_main:
                source = full[key].to(torch.uint8) if key == "filled" else full[key].to(mine.dtype)
                parts = [_padded(source[rank :: self.size], count, self.size) for rank in range(self.size)]
            dist.scatter(mine, parts, src=0)
            rows = mine[: self.shard_size(count)]
            shard[key] = rows.bool() if key == "filled" else rows
        return shard

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object); an exception is raised on every rank."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]


def share_totals(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``[sum s.t, sum s.s, sum t.t, n]`` (float64, no gradient) of attention maps (n, P) of a share of the batch."""
    s, t = student.detach().double(), teacher.detach().double()
    return torch.stack([(s * t).sum(), (s * s).sum(), (t * t).sum(), s.new_tensor(float(len(s)))])


def batch_norm_distance(student: torch.Tensor, teacher: torch.Tensor, totals: torch.Tensor) -> torch.Tensor:
    """The whole batch's ``norm="batch"`` attention distance (:func:`mmdrfuse.fusion.distill.attention_distance`)
    from one share's maps (n, P) and the whole batch's :func:`share_totals` (``D, S, T, B``):

    .. math::
        d = \\sum_b \\Big\\| \\frac{s_b}{\\|s\\|} - \\frac{t_b}{\\|t\\|} \\Big\\|^2
          = \\frac{S}{N_s^2} - \\frac{2 D}{N_s N_t} + \\frac{T}{N_t^2}, \\quad N_s = \\sqrt{S}, N_t = \\sqrt{T}.

    Its value is ``d``; its gradient is ``B / n`` times this share's part of the gradient of ``d``,
    ``B / n (d_D grad D_share + d_S grad S_share)``, so that weighting each share by ``n / B`` and
    summing over the shares (what the ranks' loss weights and DDP do) gives the gradient of ``d``.
    """
    d_total, s_total = (totals[i].detach().clone().requires_grad_(True) for i in (0, 1))
    t_total, batch = totals[2], totals[3]
    norm_s, norm_t = s_total.sqrt().clamp_min(_EPS), t_total.sqrt().clamp_min(_EPS)
    value = s_total / norm_s**2 - 2 * d_total / (norm_s * norm_t) + t_total / norm_t**2
    by_d, by_s = torch.autograd.grad(value, (d_total, s_total))
    if len(student) == 0:  # a share without samples: only its part in the all-reduce
        return value.detach().float()
    s, t = student.double(), teacher.detach().double()
    d_share, s_share = (s * t).sum(), (s * s).sum()
    live = by_d * (d_share - d_share.detach()) + by_s * (s_share - s_share.detach())  # value 0, the share's gradient
    return (value.detach() + batch / len(student) * live).float()


def _padded(tensor: torch.Tensor, count: int, size: int) -> torch.Tensor:
    """``tensor`` (one shard, on the CPU, bool as uint8) padded to the largest shard's ``ceil(count / size)`` rows."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bool:
        tensor = tensor.to(torch.uint8)
    rows = -(-count // size)
    padded = tensor.new_zeros((rows, *tensor.shape[1:]))
    padded[: len(tensor)] = tensor
    return padded


def restore_state(world: World, out_dir, *, recipe, data, model, optimizer, bank, count: int):
    """Position and loss rows of ``out_dir``'s resume state, loaded into ``model``, ``optimizer`` and
    ``bank`` (:func:`mmdrfuse.fusion.checkpoints.restore_training_state`). On several ranks rank 0
    reads it and sends every rank the model, optimizer and RNG state, and each its bank shard."""
    if not world.distributed:
        return restore_training_state(out_dir, recipe=recipe, data=data, model=model, optimizer=optimizer, bank=bank)
    state, whole_bank = None, None
    if world.is_main:
        try:
            state = read_training_state(out_dir, recipe=recipe, data=data)
            whole_bank = state.pop("bank")
        except (OSError, ValueError) as error:
            state = error  # raised on every rank by broadcast
    state = world.broadcast(state)
    if bank is not None:
        bank.load_state_dict(world.scatter_bank(whole_bank, count, bank.state_dict()))
    return apply_training_state(state, model=model, optimizer=optimizer)


def world_from_environ(environ: Mapping[str, str] = os.environ) -> World:
    """The :class:`World` torchrun describes in ``environ``; one process when it is not set."""
    if "WORLD_SIZE" not in environ:
        return World()
    try:
        size, rank = int(environ["WORLD_SIZE"]), int(environ["RANK"])
        local_rank = int(environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as error:
        raise RuntimeError(f"WORLD_SIZE is set but RANK/LOCAL_RANK are missing or not numbers ({error}): start with torchrun") from error
    if size < 1 or not 0 <= rank < size:
        raise RuntimeError(f"RANK {rank} is not within WORLD_SIZE {size}")
    return World(rank=rank, size=size, local_rank=local_rank)


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join torchrun's process group for the duration (nothing on one process, or when already joined)."""
    if not world.distributed or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel on several ranks (rank 0's weights broadcast), else ``model``."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
