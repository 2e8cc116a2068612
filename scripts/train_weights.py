"""Train the project's own MMDRFuse weights: teacher then student, for the ``paper`` and ``release`` recipes.

    PYTHONPATH=$PWD python3 scripts/train_weights.py --out DIR [--device cuda] [--toy] [--llvip DIR]

Runs from a repository checkout without installing the package, on a machine that has PyTorch,
torchvision, numpy, OpenCV, PyYAML, tqdm and matplotlib and nothing else (nothing it imports
needs ultralytics, pycocotools, polars or SciPy). Nothing is downloaded.

* Patches: every pair of the LLVIP sample set (``--llvip``; default ``shared/datasets/LLVIP-samples``
  or ``../shared/datasets/LLVIP-samples``), cut as ``mmdrfuse prepare patches`` does (128x128,
  stride 128: 32 pairs give 2,560 patches), held in memory; ``DIR/patches.json`` is their manifest.
* Backbone: torchvision's cached ImageNet VGG-19 when present (or ``--vgg-weights``), else the
  fixed-seed ``vgg19-random``; which one is recorded everywhere.
* Per recipe: the teacher (8 epochs, batch 36) in ``DIR/<recipe>/teacher``, then the student (10
  epochs, batch 26) distilled from it in ``DIR/<recipe>/student``: ``<kind>.pth`` (a plain state
  dict, as ``mmdrfuse fuse --weights`` loads), ``<kind>.json``, ``losses.csv``, ``losses.png``;
  ``DIR/<recipe>/metadata.json`` (command, seed, patch manifest hash, backbone, recipe, versions,
  GPU, wall time per stage). ``DIR/commands.txt`` holds this command and the equivalent
  ``mmdrfuse`` commands; ``DIR/summary.json`` is written last.
* ``--toy``: the same code on the CPU in well under two minutes (2 pairs, 32 x 32 patches, 16 of
  them, 2 epochs of batch 4, ``vgg19-random``).

A non-empty ``DIR`` must be an earlier output of this script with the same settings: finished
stages are kept, an interrupted one resumes from its ``last_state.pt`` (saved after each epoch),
and recipes trained by earlier calls stay in ``summary.json`` and ``commands.txt``, so the
recipes can also be trained one per call (``--recipes paper``, then ``--recipes release``). A
finished stage's resume state and per-epoch checkpoints (which this script created) are removed
to keep ``DIR`` small.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from mmdrfuse.config import defaults
from mmdrfuse.data.patches import PatchSet, load_patches, prepare_patches
from mmdrfuse.errors import DataError
from mmdrfuse.files import write_text_atomic
from mmdrfuse.fusion.checkpoints import RESUME_FILE
from mmdrfuse.fusion.perceptual import default_vgg19_path, exact_fp32
from mmdrfuse.fusion.recipes import RECIPES
from mmdrfuse.fusion.train import train_model
from mmdrfuse.native import cpu_description

FORMAT = "mmdrfuse-train-weights/1"
MARKER = "train_weights.json"
LLVIP_CANDIDATES = (Path("shared/datasets/LLVIP-samples"), Path("../shared/datasets/LLVIP-samples"))
FULL = {
    "patches": {"pairs": 200, "size": 128, "stride": 128, "seed": 0},
    "teacher": {"epochs": 8, "batch": 36},
    "student": {"epochs": 10, "batch": 26},
    "limit": None,
    "log_every": 20,
}
TOY = {
    "patches": {"pairs": 2, "size": 32, "stride": 64, "seed": 0},
    "teacher": {"epochs": 2, "batch": 4},
    "student": {"epochs": 2, "batch": 4},
    "limit": 16,
    "log_every": 2,
}
_START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - _START:6.1f}s] {message}", flush=True)


def find_llvip(given: Optional[str]) -> Path:
    if given:
        path = Path(given)
        if not (path / "infrared").is_dir():
            raise DataError(f"--llvip {path} is not an LLVIP folder (no infrared/ in it)")
        return path
    for candidate in LLVIP_CANDIDATES:
        if (candidate / "infrared").is_dir():
            return candidate
    raise DataError("no LLVIP samples: neither " + " nor ".join(str(c) for c in LLVIP_CANDIDATES)
                    + " exists (from the repository root); pass --llvip DIR")  # fmt: skip


def choose_backbone(toy: bool, vgg_weights: Optional[str]) -> Dict[str, Any]:
    """ImageNet VGG-19 when its file exists (never downloaded), else the fixed-seed random one."""
    if toy:
        return {"perceptual": "vgg19-random", "vgg_weights": None, "why": "--toy"}
    path = Path(vgg_weights) if vgg_weights else default_vgg19_path()
    if path.is_file():
        return {"perceptual": "vgg19", "vgg_weights": str(path), "why": f"found {path}"}
    if vgg_weights:
        raise DataError(f"--vgg-weights {path} does not exist")
    return {"perceptual": "vgg19-random", "vgg_weights": None, "why": f"no ImageNet VGG-19 at {path}"}


def cut_patches(llvip: Path, settings: Dict[str, Any]) -> Tuple[PatchSet, List[str]]:
    """The patches of ``llvip``'s train split as ``mmdrfuse prepare patches`` cuts them, in memory, and the pair ids."""
    with tempfile.TemporaryDirectory(prefix="mmdrfuse-patches-") as scratch:
        store = prepare_patches(llvip, **{**defaults("prepare_patches"), "split": "train", **settings},
                                out=Path(scratch) / "store", progress=False, log=log)
        loaded = load_patches(store)
        meta = json.loads((store / "meta.json").read_text(encoding="utf-8"))
        patches = PatchSet(np.array(loaded.ir), np.array(loaded.vi), list(loaded.names))
    return patches, meta["ids"]


def patch_manifest(patches: PatchSet, ids: List[str], llvip: Path, settings: Dict[str, Any], limit: Optional[int]) -> Dict[str, Any]:
    count = len(patches) if limit is None else min(limit, len(patches))
    digest = hashlib.sha256()
    digest.update("\n".join(patches.names[:count]).encode())
    digest.update(np.ascontiguousarray(patches.ir[:count]).tobytes())
    digest.update(np.ascontiguousarray(patches.vi[:count]).tobytes())
    return {
        "source": str(llvip), "split": "train", **settings, "pairs_used": len(ids), "ids": ids,
        "count": count, "shape": list(patches.ir.shape[1:]), "sha256": digest.hexdigest(),
        "hash_of": "sha256 of the newline-joined patch names, then ir.tobytes(), then vi.tobytes() (uint8, N x H x W)",
        "names": patches.names[:count],
    }  # fmt: skip


def host_cpu() -> str:
    return f"{cpu_description()} ({os.cpu_count()} logical CPUs)"


def environment(device: str) -> Dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "device": device, "gpu": None, "host_cpu": host_cpu()}  # fmt: skip
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["exact_fp32_check"] = exact_fp32_check(torch.device(device))
    return info


def exact_fp32_check(device: torch.device) -> Dict[str, float]:
    """Relative error against float64 of a 64-channel 3x3 convolution in the default fp32 (TF32 where
    PyTorch allows it) and inside ``exact_fp32``, which the refresh losses use: proof on the GPU itself."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(4, 64, 64, 64, generator=generator)
    w = torch.randn(64, 64, 3, 3, generator=generator) / 24
    reference = torch.nn.functional.conv2d(x.double(), w.double())
    xd, wd = x.to(device), w.to(device)
    default = torch.nn.functional.conv2d(xd, wd)
    with exact_fp32(device.type):
        exact = torch.nn.functional.conv2d(xd, wd)
    error = lambda y: float((y.double().cpu() - reference).norm() / reference.norm())  # noqa: E731
    return {"default_fp32_conv": error(default), "exact_fp32_conv": error(exact)}


def check_out_dir(out: Path, settings: Dict[str, Any]) -> None:
    """Refuse a non-empty folder that is not an earlier output of this script with these settings."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    marker = out / MARKER
    if not marker.is_file():
        raise DataError(f"--out {out} is not empty and not an output of scripts/train_weights.py (no {MARKER}): choose another folder")
    earlier = json.loads(marker.read_text(encoding="utf-8"))
    if earlier.get("format") != FORMAT or earlier.get("settings") != settings:
        raise DataError(f"--out {out} holds a run of scripts/train_weights.py with other settings ({marker}): choose another folder")


def stage_done(folder: Path, kind: str) -> bool:
    info = folder / f"{kind}.json"
    return (folder / f"{kind}.pth").is_file() and info.is_file() and json.loads(info.read_text()).get("completed") is True


def train_stage(kind: str, folder: Path, *, patches: PatchSet, options: Dict[str, Any], teacher: Optional[Path],
                log_every: int) -> Dict[str, Any]:  # fmt: skip
    """Train (or resume, or keep) one network; returns what the metadata records of it."""
    if stage_done(folder, kind):
        log(f"{folder / (kind + '.pth')} is already trained: kept")
    else:
        resume = (folder / RESUME_FILE).exists()
        log(f"{'resuming' if resume else 'training'} {kind} in {folder}")
        started = time.perf_counter()
        train_model(kind, patches=patches, out_dir=folder, teacher_weights=teacher, progress=False, log=log,
                    log_every=log_every, resume=resume, **options)  # fmt: skip
        write_text_atomic(folder / "stage_seconds.txt", f"{time.perf_counter() - started:.3f}\n")
        (folder / RESUME_FILE).unlink(missing_ok=True)  # created by this run: a finished stage needs no resume
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    info = json.loads((folder / f"{kind}.json").read_text(encoding="utf-8"))
    seconds_file = folder / "stage_seconds.txt"
    with open(folder / "losses.csv", encoding="utf-8") as handle:
        header, *rows = [line.rstrip("\n").split(",") for line in handle]
    return {
        "weights": str(folder / f"{kind}.pth"),
        "bytes": (folder / f"{kind}.pth").stat().st_size,
        "seconds": float(seconds_file.read_text()) if seconds_file.is_file() else None,
        "steps": info["global_step"],
        "recipe": info["recipe"],
        "perceptual": info["perceptual"],
        "final_losses": dict(zip(header[2:], map(float, rows[-1][2:]))) if rows else {},
    }


def cli_commands(llvip: Path, out: Path, recipe: str, plan: Dict[str, Any], options: Dict[str, Any]) -> List[str]:
    """The ``mmdrfuse`` commands that train the same networks (patches in a store instead of memory)."""
    p = plan["patches"]
    store = out / "patches"
    common = ["--patches", str(store), "--recipe", recipe, "--perceptual", options["perceptual"], "--seed", str(options["seed"]),
              "--device", options["device"], "--quiet"]  # fmt: skip
    if options["vgg_weights"]:
        common += ["--vgg-weights", options["vgg_weights"]]
    if plan["limit"]:
        common += ["--limit", str(plan["limit"])]
    teacher, student = out / recipe / "teacher", out / recipe / "student"
    lines = [
        ["mmdrfuse", "prepare", "patches", "--root", str(llvip), "--split", "train", "--pairs", str(p["pairs"]),
         "--size", str(p["size"]), "--stride", str(p["stride"]), "--seed", str(p["seed"]), "--out", str(store)],
        ["mmdrfuse", "train", "teacher", *common, "--epochs", str(plan["teacher"]["epochs"]),
         "--batch", str(plan["teacher"]["batch"]), "--out", str(teacher)],
        ["mmdrfuse", "train", "student", *common, "--teacher", str(teacher / "teacher.pth"),
         "--epochs", str(plan["student"]["epochs"]), "--batch", str(plan["student"]["batch"]), "--out", str(student)],
    ]  # fmt: skip
    return [shlex.join(line) for line in lines]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (empty, or an earlier output of this script)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: auto; cpu with --toy)")
    parser.add_argument("--toy", action="store_true", help="a few CPU steps on tiny patches: proves every path")
    parser.add_argument("--llvip", help="LLVIP folder (default: shared/ or ../shared/datasets/LLVIP-samples)")
    parser.add_argument("--recipes", default="paper,release", help="comma-separated, of: " + ", ".join(RECIPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vgg-weights", help="ImageNet VGG-19 file (default: torchvision's cache, if there)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU intra-op threads (default: torch's; 1 with --toy: on a small shared CPU more oversubscribe it)")
    args = parser.parse_args(argv)
    try:
        return run(args, argv if argv is not None else sys.argv[1:])
    except (DataError, ValueError, FileNotFoundError) as error:
        print(f"train_weights: {error}", file=sys.stderr, flush=True)
        return 2


def run(args, argv: List[str]) -> int:
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown or not recipes:
        raise ValueError(f"--recipes takes some of {', '.join(RECIPES)}, got {args.recipes!r}")
    plan = TOY if args.toy else FULL
    threads = args.threads if args.threads is not None else (1 if args.toy else 0)
    if threads:
        torch.set_num_threads(threads)
    device = args.device or ("cpu" if args.toy else "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    llvip = find_llvip(args.llvip)
    backbone = choose_backbone(args.toy, args.vgg_weights)
    settings = {"toy": args.toy, "seed": args.seed, "plan": plan, "perceptual": backbone["perceptual"],
                "llvip": str(llvip.resolve())}  # fmt: skip
    check_out_dir(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["PYTHONPATH=$PWD", "python3", "scripts/train_weights.py", *argv]).replace("'PYTHONPATH=$PWD'", "PYTHONPATH=$PWD")
    runs = json.loads((out / MARKER).read_text(encoding="utf-8")).get("runs", []) if (out / MARKER).is_file() else []
    runs.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {command}")
    write_text_atomic(out / MARKER, json.dumps({"format": FORMAT, "settings": settings, "runs": runs}, indent=2) + "\n")
    env = environment(device)
    if "exact_fp32_check" in env:
        check = env["exact_fp32_check"]
        log(f"conv relative error vs float64: default fp32 {check['default_fp32_conv']:.2e}, exact_fp32 {check['exact_fp32_conv']:.2e}"
            + ("" if check["exact_fp32_conv"] < 1e-5 else "  WARNING: exact_fp32 does not give fp32 accuracy here"))
    log(f"train_weights: {'TOY ' if args.toy else ''}recipes {', '.join(recipes)} on {device} ({env['gpu'] or env['host_cpu']}), "
        f"torch {env['torch']} CUDA {env['cuda']}; backbone {backbone['perceptual']} ({backbone['why']}); LLVIP {llvip}")  # fmt: skip

    started = time.perf_counter()
    patches, ids = cut_patches(llvip, plan["patches"])
    manifest = patch_manifest(patches, ids, llvip, plan["patches"], plan["limit"])
    write_text_atomic(out / "patches.json", json.dumps(manifest, indent=2) + "\n")
    prepare_seconds = time.perf_counter() - started
    log(f"{manifest['count']} patches of {manifest['shape'][1]}x{manifest['shape'][0]} from {manifest['pairs_used']} pairs "
        f"(sha256 {manifest['sha256'][:16]}) in {prepare_seconds:.1f} s")  # fmt: skip

    options = {"perceptual": backbone["perceptual"], "vgg_weights": backbone["vgg_weights"], "seed": args.seed,
               "device": device, "limit": plan["limit"]}  # fmt: skip
    # Recipes trained by earlier runs into this folder (e.g. one recipe per call) stay in the summary.
    earlier = json.loads((out / "summary.json").read_text(encoding="utf-8")) if (out / "summary.json").is_file() else {}
    summary: Dict[str, Any] = {"format": FORMAT, "toy": args.toy, "command": command, "runs": runs, "environment": env,
                               "backbone": backbone, "patches": {k: manifest[k] for k in ("count", "shape", "sha256")},
                               "prepare_seconds": prepare_seconds, "recipes": earlier.get("recipes", {})}  # fmt: skip
    for recipe in recipes:
        folder = out / recipe
        stages = {}
        for kind in ("teacher", "student"):
            teacher = folder / "teacher" / "teacher.pth" if kind == "student" else None
            stages[kind] = train_stage(kind, folder / kind, patches=patches, teacher=teacher, log_every=plan["log_every"],
                                       options={**options, **plan[kind], "recipe": recipe})  # fmt: skip
            log(f"{recipe} {kind}: {stages[kind]['steps']} steps in {stages[kind]['seconds'] or 0:.1f} s, "
                f"final total loss {stages[kind]['final_losses'].get('total', float('nan')):.4g} -> {stages[kind]['weights']}")
        equivalent = cli_commands(llvip, out, recipe, plan, options)
        metadata = {"recipe": recipe, "command": command, "equivalent_commands": equivalent, "seed": args.seed,
                    "patches_sha256": manifest["sha256"], "patch_count": manifest["count"], "backbone": backbone,
                    "environment": env, "stages": stages}  # fmt: skip
        write_text_atomic(folder / "metadata.json", json.dumps(metadata, indent=2, default=str) + "\n")
        summary["recipes"][recipe] = {kind: {k: stage[k] for k in ("weights", "bytes", "seconds", "steps", "final_losses")}
                                      for kind, stage in stages.items()}  # fmt: skip
    commands = ["# runs of scripts/train_weights.py into this folder (from the repository root)", *runs, ""]
    for name in sorted(summary["recipes"]):
        equivalent = json.loads((out / name / "metadata.json").read_text(encoding="utf-8"))["equivalent_commands"]
        commands += [f"# recipe {name}: the equivalent mmdrfuse commands (the patches in a store instead of memory)", *equivalent, ""]
    write_text_atomic(out / "commands.txt", "\n".join(commands))
    summary["wall_seconds"] = time.perf_counter() - _START
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    log(f"done in {summary['wall_seconds']:.1f} s: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
