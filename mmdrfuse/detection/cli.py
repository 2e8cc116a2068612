"""Commands of mmdrfuse.detection (see mmdrfuse/cli.py): detect, pipeline, demo."""
from __future__ import annotations

from mmdrfuse.config import add_command, defaults

STAGE_NAMES = "synthetic, prepare, teacher, student, fuse, datasets, warmstart, detect, report"


def _detect(args) -> int:
    from mmdrfuse.detection.detect import run_detect

    return run_detect(args)


def _pipeline(args) -> int:
    from mmdrfuse.detection.pipeline import load_config, run_pipeline

    config = load_config(args.config_file)
    out = args.out or config.get("out") or defaults("pipeline")["out"]
    outcome = run_pipeline(config, out, force_from=args.from_stage, progress=not args.quiet)
    print(f"report: {outcome['report']}/report.md")
    return 0


def _demo(args) -> int:
    from mmdrfuse.detection.demo import run_demo

    return run_demo(args)


def register(subparsers) -> None:
    """Add this subpackage's commands to the top-level parser."""
    D = defaults("detect")
    parser = add_command(subparsers, "detect", help="train a YOLO detector on each fusion method's images and compare them")
    parser.add_argument("--root", help="LLVIP folder (infrared/, visible/, Annotations/); required")
    parser.add_argument("--method", action="append", metavar="NAME=DIR",
                        help="a fusion method's images, one per LLVIP id (stem = id); repeatable")
    parser.add_argument("--builtin", default=D["builtin"], metavar="NAMES",
                        help="comma-separated built-in methods: infrared, visible, average, max, laplacian, student, teacher "
                             f"(default: {D['builtin']})")
    parser.add_argument("--out", help="output folder (re-running continues where it stopped); required")
    parser.add_argument("--model", default=D["model"], help="ultralytics model YAML (default: %(default)s)")
    parser.add_argument("--weights", default=D["weights"],
                        help="starting weights: a name in ultralytics' weights folder, a .pt path, or none "
                             "(train from the YAML) (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=D["epochs"], help="default: %(default)s")
    parser.add_argument("--batch", type=int, default=D["batch"], help="default: %(default)s")
    parser.add_argument("--optimizer", default=D["optimizer"], help="default: %(default)s")
    parser.add_argument("--imgsz", type=int, default=D["imgsz"], help="default: %(default)s")
    parser.add_argument("--device", default=D["device"], help="auto | cpu | 0 | 0,1 ... (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=D["seed"], help="subset draw and training seed (default: %(default)s)")
    parser.add_argument("--train", type=int, default=D["train"], help="training pairs (default: %(default)s)")
    parser.add_argument("--val", type=int, default=D["val"], help="validation pairs (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=D["workers"], help="dataloader workers (default: %(default)s)")
    parser.add_argument("--student-weights", help="student weights for the built-in 'student' method")
    parser.add_argument("--teacher-weights", help="teacher weights for the built-in 'teacher' method")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=_detect)

    parser = add_command(subparsers, "pipeline", help="run prepare, train, fuse, detect and report from one YAML config, with caching")
    parser.add_argument("config_file", metavar="CONFIG.yaml", help="pipeline config (e.g. configs/llvip-paper.yaml)")
    parser.add_argument("--from", dest="from_stage", metavar="STAGE", help=f"rerun this stage and those after it ({STAGE_NAMES})")
    parser.add_argument("--out", help=f"run folder (default: the config's out, else {defaults('pipeline')['out']})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=_pipeline)

    D = defaults("demo")
    parser = add_command(subparsers, "demo", help="the whole pipeline on synthetic data, sized for a small CPU (5 to 10 minutes on 2 cores)")
    parser.add_argument("--out", help=f"run folder (default: {D['out']}, or {D['quick_out']} with --quick)")
    parser.add_argument("--quick", action="store_true", help="every stage at toy scale (CI, a few minutes); the numbers mean nothing")
    parser.add_argument("--from", dest="from_stage", metavar="STAGE", help=f"rerun this stage and those after it ({STAGE_NAMES})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=_demo)
