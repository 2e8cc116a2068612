"""Make ultralytics safe on a machine without network: find the detector weights first, and
stop every download ultralytics would otherwise attempt on its own.

What ultralytics 8.4 fetches unasked (read from its source):
- weights given by name that are not on disk (``attempt_download_asset``: GitHub releases);
- ``Arial.ttf`` in ``check_det_dataset`` -> ``check_font``, on every training run, plots or not;
- ``yolo26n.pt`` in ``check_amp`` when ``amp=True`` on a GPU;
- usage events (``utils/events.py``) when settings ``sync`` is on and the machine is online;
- ``faster-coco-eval`` via pip when ``save_json`` is set (we never set it: yolo_val.py captures
  the validator's predictions and coco_eval.py scores them with pycocotools).
``YOLO_OFFLINE=1`` (read at import) makes ultralytics consider itself offline, which turns the
events off and makes a download fail at once instead of retrying.
"""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Optional

from mmdrfuse.errors import DataError

NO_WEIGHTS = ("none", "null", "")


def _resolves(host: str, timeout: float) -> bool:
    """True when ``host`` resolves within ``timeout`` seconds (getaddrinfo has no timeout of its own)."""
    result = []

    def lookup():
        try:
            socket.getaddrinfo(host, 0, socket.AF_UNSPEC, 0, 0, socket.AI_ADDRCONFIG)
            result.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result)


def is_online(timeout: float = 2.0) -> bool:
    """The check ultralytics makes (DNS of two public resolvers), bounded in time; ``YOLO_OFFLINE=1`` forces False."""
    if os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    return any(_resolves(host, timeout) for host in ("one.one.one.one", "dns.google"))


def import_ultralytics_offline() -> None:
    """Import ultralytics with ``YOLO_OFFLINE=1``: its import-time online probe (DNS lookups, which
    can hang where DNS is black-holed) is skipped and its ``ONLINE`` flag, which gates telemetry,
    stays False. The variable is restored afterwards, so a download allowed later still works."""
    previous = os.environ.get("YOLO_OFFLINE")
    os.environ["YOLO_OFFLINE"] = "1"
    try:
        import ultralytics.utils  # noqa: F401
    finally:
        if previous is None:
            del os.environ["YOLO_OFFLINE"]
        else:
            os.environ["YOLO_OFFLINE"] = previous


def weights_dir() -> Path:
    """ultralytics' weights folder (its settings ``weights_dir``), where it looks up weights by name."""
    import_ultralytics_offline()
    from ultralytics.utils import SETTINGS

    return Path(SETTINGS["weights_dir"])


def canonical_name(name: str) -> str:
    """ultralytics loads the anchor-free 'u' variants for YOLOv5 names (yolov5s.pt -> yolov5su.pt)."""
    import_ultralytics_offline()
    from ultralytics.utils.checks import check_yolov5u_filename

    return check_yolov5u_filename(name, verbose=False)


def resolve_weights(spec: Optional[str], *, online: Optional[bool] = None) -> Optional[str]:
    """Where to load the detector's starting weights from, checked before ultralytics sees them.

    ``spec`` is ``none`` (train from the model YAML: returns None), a path to a ``.pt`` file,
    or a name such as ``yolov5su.pt`` looked up in the current folder and in ultralytics'
    weights folder. A name found nowhere is returned as is (for ultralytics to download)
    only when the machine is online; offline it is a DataError that suggests ``--weights none``.
    """
    if spec is None or str(spec).strip().lower() in NO_WEIGHTS:
        return None
    spec = str(spec).strip()
    path = Path(spec).expanduser()
    if path.is_file():
        return str(path.resolve())
    if len(path.parts) > 1 or path.is_absolute():
        raise DataError(f"detector weights file does not exist: {path}")
    name = canonical_name(spec)
    candidates = [Path(name), weights_dir() / name]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    if online is None:
        online = is_online()
    if not online:
        raise DataError(
            f"detector weights {spec!r} are not on this machine (looked for {', '.join(map(str, candidates))}) "
            "and there is no network to download them: pass --weights PATH to a local .pt file, "
            "or --weights none to train from the model YAML (random initialisation)"
        )
    return name


def prepare_ultralytics(*, allow_download: bool = False) -> None:
    """Call before any ultralytics import that starts work: no font fetch, no telemetry, and
    (unless ``allow_download``, for weights resolved by name on an online machine) no download."""
    import_ultralytics_offline()
    if not allow_download:
        os.environ["YOLO_OFFLINE"] = "1"
    import ultralytics.data.utils as data_utils
    from ultralytics.utils import events

    # Labels are drawn by our own report (report.py), so the font ultralytics wants for its plots
    # is never needed; check_det_dataset would otherwise try to download Arial.ttf on each run.
    data_utils.check_font = _local_font_only
    events.events.enabled = False


def _local_font_only(font: str = "Arial.ttf"):
    from ultralytics.utils import USER_CONFIG_DIR

    file = USER_CONFIG_DIR / Path(font).name
    return file if file.exists() else None
