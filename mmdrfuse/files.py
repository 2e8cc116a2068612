"""Atomic file and folder writing: nothing half-written is ever left under a final name, and
no folder the command did not create is ever deleted.

A folder output (``prepare patches | yolo | synthetic``, ``fuse``) is built in a staging sibling
``.<name>.partial-<pid>-*`` and renamed into place in one step; it carries a marker file
``.mmdrfuse.json`` naming the command and its settings. An existing non-empty folder is replaced
only when its marker names the same command (and the caller allows it); anything else is refused.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional, Union

from mmdrfuse.errors import DataError

PathLike = Union[str, os.PathLike]
MARKER = ".mmdrfuse.json"
# Staging left by versions that did not put the owner's pid in the name: removed once this old.
_LEGACY_STALE_SECONDS = 3600


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which would race with writer threads.
_UMASK = _read_umask()


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def read_marker(folder: PathLike) -> Optional[dict]:
    """The ``.mmdrfuse.json`` of an output folder, or None when it has none (or an unreadable one)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("command"), str) else None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _is_stale(entry: Path) -> bool:
    """A staging folder whose owner is gone: its pid (``...-<pid>-...``) no longer runs, or,
    for names without a pid, nothing has touched it for an hour."""
    match = re.search(r"\.(?:partial|old)-(\d+)-", entry.name)
    if match:
        return not _pid_alive(int(match.group(1)))
    try:
        return time.time() - entry.stat().st_mtime > _LEGACY_STALE_SECONDS
    except OSError:
        return False


def clear_stale_staging(final: PathLike) -> None:
    """Remove this output's own leftovers of killed runs: ``.<name>.partial-*`` and ``.<name>.old-*``
    beside ``final`` and ``.fuse-partial-*`` inside it (older versions staged there)."""
    final = Path(final)
    candidates = []
    if final.parent.is_dir():
        candidates += [e for e in final.parent.iterdir()
                       if e.name.startswith((f".{final.name}.partial-", f".{final.name}.old-"))]
    if final.is_dir() and not final.is_symlink():
        candidates += [e for e in final.iterdir() if e.name.startswith(".fuse-partial-")]
    for entry in candidates:
        if entry.is_dir() and not entry.is_symlink() and _is_stale(entry):
            shutil.rmtree(entry, ignore_errors=True)


def check_output_folder(final: PathLike, command: str, *, overwrite: bool) -> None:
    """Refuse an output folder this command may not replace, before any work is done.

    Allowed: a missing folder, an empty one, or (with ``overwrite``) one whose ``.mmdrfuse.json``
    names ``command``. Anything else (a file, a folder with other content, another command's
    output) is a DataError that says what is there; nothing is changed. Stale staging of this
    output left by killed runs is removed first.
    """
    final = Path(final)
    clear_stale_staging(final)
    if not final.exists() and not final.is_symlink():
        return
    if not final.is_dir():
        raise DataError(f"output {final} exists and is not a folder; choose another --out")
    if not any(final.iterdir()):
        return
    marker = read_marker(final)
    if marker is None:
        raise DataError(f"output folder {final} is not empty and was not written by `mmdrfuse {command}` "
                        f"(no {MARKER}); nothing was changed: choose another --out or empty it yourself")
    if marker["command"] != command:
        raise DataError(f"output folder {final} holds the output of `mmdrfuse {marker['command']}`, "
                        f"not of `mmdrfuse {command}`; nothing was changed: choose another --out")
    if not overwrite:
        raise DataError(f"output folder {final} holds an earlier output of `mmdrfuse {command}`; "
                        f"pass --overwrite to replace it, or choose another --out")


def _marker_text(command: str, settings: Optional[dict]) -> str:
    from mmdrfuse import __version__

    record = {"command": command, "mmdrfuse_version": __version__,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings or {}}
    return json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"


@contextlib.contextmanager
def atomic_directory(final: PathLike, *, command: Optional[str] = None, settings: Optional[dict] = None,
                     overwrite: bool = True) -> Iterator[Path]:
    """Build a directory under a temporary sibling name and rename it to ``final`` on success.

    An interrupted build leaves only ``.<name>.partial-<pid>-*`` behind (removed by the next run
    once that pid is gone), never a folder that looks complete. With ``command`` the folder gets a
    ``.mmdrfuse.json`` marker (``command``, ``settings``, version) and an existing ``final`` is
    replaced only as :func:`check_output_folder` allows (checked before and again after the
    build). Without ``command`` (a folder the caller owns outright) an existing ``final`` is
    replaced when ``overwrite``, else refused.
    """
    final = Path(final)
    if command is not None:
        check_output_folder(final, command, overwrite=overwrite)
    else:
        clear_stale_staging(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-{os.getpid()}-", dir=final.parent))
    os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes 0700; a dataset should be readable like any folder
    try:
        yield staging
        if command is not None:
            write_text_atomic(staging / MARKER, _marker_text(command, settings))
            check_output_folder(final, command, overwrite=overwrite)  # something may have appeared meanwhile
        elif final.exists() and not overwrite:
            raise DataError(f"output already exists: {final}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-{os.getpid()}-", dir=final.parent))
        os.replace(final, old / final.name)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)
