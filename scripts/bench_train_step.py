"""Time one training step of the teacher (batch 36) and the student (batch 26) on 128x128 patches,
and on CUDA check that bf16 autocast of the VGG-19 changes the losses and gradients only by noise,
the refresh losses included (bank entries 1e-2 away from the outputs, which they run in fp32 for).

    python3 scripts/bench_train_step.py [--device cpu|cuda] [--threads 1] [--repeats 3] [--json FILE]

The timed steps run after epoch 0 with a history bank that beats every output, so both refresh
losses (and their extra VGG passes) are included: the most expensive step of the recipe.
Uses a fixed-seed random VGG-19 (cost identical to the ImageNet one) unless --perceptual vgg19.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from mmdrfuse.device import resolve_device
from mmdrfuse.fusion.networks import Teacher
from mmdrfuse.fusion.train import build_trainer, training_config


def smooth_batch(batch: int, size: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(2, batch, 1, size // 16, size // 16, generator=g)
    ir, vi = (torch.nn.functional.interpolate(c, size=(size, size), mode="bicubic").clamp(0, 1) for c in coarse)
    return ir, vi


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(kind, batch, size, device, repeats, perceptual, amp, teacher_file):
    cfg = training_config(kind, {"batch": batch, "perceptual": perceptual, "amp": amp})
    trainer = build_trainer(kind, cfg, count=batch, height=size, width=size, device=device,
                            teacher_weights=teacher_file, log=lambda _: None)  # fmt: skip
    ir, vi = (x.to(device) for x in smooth_batch(batch, size, 0))
    index = torch.arange(batch)
    trainer.step(ir, vi, index, epoch=0)  # warm-up, fills the bank
    walls, cpus = [], []
    for _ in range(repeats):
        trainer.bank.fill(index, torch.max(ir, vi))  # better than any output: both refresh losses run
        sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        log = trainer.step(ir, vi, index, epoch=1)
        sync(device)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"kind": kind, "batch": batch, "size": size, "device": str(device), "amp": amp and device.type == "cuda",
            "threads": torch.get_num_threads(), "wall_s_min": min(walls), "wall_s_median": float(np.median(walls)),
            "cpu_s_min": min(cpus), "terms": {k: round(v, 6) for k, v in log.items()}}  # fmt: skip


def amp_agreement(kind, batch, size, device, perceptual, teacher_file):
    """Loss terms and the gradient with and without bf16 autocast, same weights, same batch."""
    results = {}
    for amp in (False, True):
        cfg = training_config(kind, {"batch": batch, "perceptual": perceptual, "amp": amp})
        trainer = build_trainer(kind, cfg, count=batch, height=size, width=size, device=device,
                                teacher_weights=teacher_file, log=lambda _: None)  # fmt: skip
        ir, vi = (x.to(device) for x in smooth_batch(batch, size, 1))
        index = torch.arange(batch)
        with torch.no_grad():
            fused, _ = trainer.model(torch.cat([ir, vi], 1))
        trainer.bank.fill(index, fused + 1e-2 * torch.sign(torch.max(ir, vi) - fused))  # a little better: both refresh losses
        total, terms = trainer.loss(ir, vi, index, epoch=1)
        total.backward()
        grad = torch.cat([p.grad.flatten() for p in trainer.model.parameters()])
        results[amp] = (terms, grad)
    (t32, g32), (t16, g16) = results[False], results[True]
    relative = {k: abs(t16[k] - t32[k]) / max(abs(t32[k]), 1e-12) for k in t32 if t32[k]}
    cosine = torch.nn.functional.cosine_similarity(g32, g16, dim=0).item()
    return {"kind": kind, "relative_loss_difference": relative, "gradient_cosine": cosine}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0: torch's default)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--perceptual", default="vgg19-random")
    parser.add_argument("--kinds", default="teacher,student")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    teacher_file = "/tmp/bench_train_step_teacher.pth"
    torch.save(Teacher().state_dict(), teacher_file)
    batches = {"teacher": 36, "student": 26}
    results = []
    for kind in args.kinds.split(","):
        for amp in ((False, True) if device.type == "cuda" else (False,)):
            result = time_steps(kind, batches[kind], args.size, device, args.repeats, args.perceptual, amp, teacher_file)
            print(json.dumps(result), flush=True)
            results.append(result)
        if device.type == "cuda":
            result = amp_agreement(kind, batches[kind], args.size, device, args.perceptual, teacher_file)
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
