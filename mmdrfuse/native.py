"""Build and load small embedded C kernels: compiled with the system C compiler on first use.

A library is compiled once per user and machine into the cache folder (``$MMDRFUSE_CACHE``,
else ``$XDG_CACHE_HOME/mmdrfuse``, else ``~/.cache/mmdrfuse``) under a name keyed by its
source, flags, compiler, compiler version and CPU (``-march=native`` makes it CPU-specific),
through a temporary file renamed into place, so concurrent first uses never load a
half-written file. ``MMDRFUSE_NO_NATIVE`` (any non-empty value) disables every kernel; callers
fall back to their pure-Python path on the RuntimeError.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Mapping, Optional, Sequence

CPUINFO = "/proc/cpuinfo"  # Linux; a module attribute so tests can hand in another machine's

# The portable set is tried when the compiler rejects -march=native.
FLAG_SETS = (
    ["-O3", "-march=native", "-fno-math-errno", "-fPIC", "-shared"],
    ["-O3", "-fno-math-errno", "-fPIC", "-shared"],
)


def cache_dir() -> Path:
    """Per-user folder for the compiled kernels."""
    if os.environ.get("MMDRFUSE_CACHE"):
        return Path(os.environ["MMDRFUSE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmdrfuse"


def cpu_description(*, flags: bool = False) -> str:
    """The CPU as ``/proc/cpuinfo`` names it, e.g. ``"AMD EPYC 7B13"``.

    With ``flags``, every distinct ``model name`` and ``flags`` line, sorted: what
    ``-march=native`` code depends on, so the build cache keys on it. Without
    ``/proc/cpuinfo`` (or a model name in it), ``platform.processor()`` or
    ``platform.machine()``.
    """
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as handle:
            lines = sorted({line for line in handle if line.startswith(("model name", "flags"))})
    except OSError:
        lines = []
    fallback = platform.processor() or platform.machine()
    if flags:
        return "".join(lines) or fallback
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else fallback


def find_compiler() -> Optional[str]:
    """Path of the first of ``$CC``, cc, gcc, clang found, else None."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compile(compiler: str, flags, source_text: str, name: str, folder: Path, target: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as work:
        source = Path(work) / f"{name}.c"
        source.write_text(source_text, encoding="utf-8")
        built = Path(work) / target.name
        result = subprocess.run([compiler, *flags, "-o", str(built), str(source)], capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} {' '.join(flags)}: {result.stderr.strip()[-500:]}")
        os.replace(built, target)


def build_library(name: str, source: str, compiler: Optional[str]) -> ctypes.CDLL:
    """Compile ``source`` (C) with ``compiler`` into ``<cache>/<name>-<key>.so`` unless cached, and load it.

    Raises RuntimeError when disabled by ``MMDRFUSE_NO_NATIVE``, without a compiler, or when
    no flag set builds and loads. Callers memoise the result.
    """
    if os.environ.get("MMDRFUSE_NO_NATIVE"):
        raise RuntimeError("native kernel disabled by MMDRFUSE_NO_NATIVE")
    if compiler is None:
        raise RuntimeError("no C compiler found (tried $CC, cc, gcc, clang)")
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"C compiler {compiler} does not run: {error}") from error
    folder = cache_dir()
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(
            "\n".join([source, " ".join(flags), compiler, version, platform.machine(), cpu_description(flags=True)]).encode()
        ).hexdigest()[:20]
        target = folder / f"{name}-{key}.so"
        try:
            if not target.is_file():
                _compile(compiler, flags, source, name, folder, target)
            return ctypes.CDLL(str(target))
        except (OSError, subprocess.SubprocessError, RuntimeError) as error:
            errors.append(str(error))
    raise RuntimeError(f"cannot build the native {name}:\n" + "\n".join(errors))


_load_lock = threading.Lock()


def load_once(loaded: dict, name: str, source: str, signatures: Mapping[str, Sequence]) -> Optional[ctypes.CDLL]:
    """The library ``name`` built from ``source`` by :func:`build_library`, with the ``argtypes`` of
    each function in ``signatures`` set (every one returns an int status), memoised in ``loaded``
    (its module's dict, under ``"library"``); None, memoised too (no retry per call), when it
    cannot be built: its callers then take their NumPy path."""
    with _load_lock:
        if "library" not in loaded:
            try:
                library = build_library(name, source, find_compiler())
            except RuntimeError:
                library = None
            else:
                for function, argtypes in signatures.items():
                    getattr(library, function).argtypes = list(argtypes)
                    getattr(library, function).restype = ctypes.c_int
            loaded["library"] = library
        return loaded["library"]
