"""Independent tasks (one detector per fusion method and training seed) as Ray tasks, on this
machine or on a Ray cluster.

The contract is the local executor's (``mmdrfuse.pipeline.executor``): ``function`` is a plain
top-level function and each task a mapping of picklable keyword arguments, run as
``function(**task)``; the answer has one entry per task, in the order of ``tasks``: its result, or
a ``TaskError`` naming the task (its method and seed) when it failed. One failed task does not stop
the others; an interrupt (Ctrl-C, SIGTERM) cancels the tasks still running and stops the run.

Ray schedules; we only submit: each task asks for one GPU when the cluster has GPUs (Ray then sets
``CUDA_VISIBLE_DEVICES`` to that one, so a task's device ``auto`` or ``0`` is its own GPU), one CPU
otherwise. Paths inside tasks are the driver's paths: on a cluster every node must see them (a
shared file system), and the files a task writes (weights, predictions) stay there; its return
value comes back through Ray.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import mmdrfuse

INSTALL = "pip install 'mmdrfuse[ray]'"
# A node lost with its task (preempted, crashed) gets the task once more; a task that kills its worker
# itself (out of memory) is not retried for hours on end.
MAX_RETRIES = 1


class RayNotInstalled(RuntimeError):
    """``--executor ray`` without Ray installed (the message says how to install it)."""


class TaskError(RuntimeError):
    """One task failed: ``description`` (its method and seed), ``error`` (what it raised, or Ray's
    error when its worker or node died) and ``trace`` (the remote traceback, when there is one)."""

    def __init__(self, description: str, error: BaseException, trace: str = ""):
        super().__init__(f"task {description} failed: {type(error).__name__}: {error}")
        self.description, self.error, self.trace = description, error, trace

    def __reduce__(self):
        return type(self), (self.description, self.error, self.trace)


def require_ray():
    """The ``ray`` module, or ``RayNotInstalled`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayNotInstalled(f"--executor ray needs Ray, which is not installed here: {INSTALL}") from None
    return ray


def describe(task: Mapping) -> str:
    """A task in a few words: its ``method`` and ``seed`` when it has them, else its short scalar
    and path arguments (``out_dir`` names the method and seed of a detector run)."""
    keys = [key for key in ("method", "seed") if key in task]
    if not keys:
        keys = [key for key, value in task.items() if isinstance(value, (str, int, float, bool, os.PathLike))]
    parts = []
    for key in keys:
        value = task[key]
        text = str(value) if isinstance(value, os.PathLike) else repr(value)
        parts.append(f"{key}={text if len(text) <= 80 else '...' + text[-77:]}")
    return "(" + ", ".join(parts) + ")"


def _call(function: Callable, task: Mapping) -> Any:
    """What a Ray worker runs: ``function(**task)`` (``function`` travels by reference: the worker
    imports its module, hence ``worker_runtime_env``)."""
    return function(**task)


def package_root() -> Path:
    """The folder holding the ``mmdrfuse`` package this process runs."""
    return Path(mmdrfuse.__file__).resolve().parent.parent


def local_workers_find_this_package() -> bool:
    """Whether a worker of a local instance would import this very ``mmdrfuse``. Ray starts local
    workers with the driver's interpreter, environment and working directory (which it puts first
    on their ``sys.path``), so a child process with those answers exactly; it fails when the driver
    found the package elsewhere (``sys.path`` changed in the program, another checkout installed)."""
    probe = "import importlib.util as u; s = u.find_spec('mmdrfuse'); print(s.origin if s else '')"
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=os.getcwd()).stdout
    return bool(found.strip()) and Path(found.strip()).resolve() == Path(mmdrfuse.__file__).resolve()


def worker_runtime_env(*, local: bool) -> Optional[Dict]:
    """The job's Ray ``runtime_env`` (``ray.init``; Ray ships local folders only at that level) that
    makes workers import the driver's ``mmdrfuse``, or None when they already do. A local instance:
    this package's folder first on ``PYTHONPATH``, only when ``local_workers_find_this_package`` says
    no. A cluster: the package's source is shipped to every node (``py_modules``, cached there by its
    content), so nodes need its dependencies, not a copy of it, and run the driver's very code."""
    if not local:
        return {"py_modules": [str(Path(mmdrfuse.__file__).resolve().parent)], "excludes": ["__pycache__", "*.pyc"]}
    if local_workers_find_this_package():
        return None
    search = [str(package_root())] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(search)}}


def _machine_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def _no_usage_report() -> Iterator[None]:
    """Ray reports usage statistics over the network unless told not to; a local instance started
    here is told (its processes inherit the variable while it starts), unless the user chose."""
    previous = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED", None)


def check_reachable(address: str, *, timeout: float = 10.0) -> None:
    """A ``ConnectionError`` in one line when nothing listens at ``host:port`` (or ``ray://host:port``):
    ``ray.init`` itself would retry for minutes. ``auto`` is Ray's to resolve."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(f"no Ray cluster answers at {address} ({error}); `ray start --head` on the head "
                              f"node prints its address, e.g. HOST:6379") from None


def _refused_token(error: BaseException) -> bool:
    while error is not None:
        if "InvalidAuthToken" in str(error) or type(error).__name__ == "AuthenticationError":
            return True
        error = error.__cause__ or error.__context__
    return False


def connect(ray, address: Optional[str], *, num_cpus: Optional[int] = None) -> bool:
    """Connect to the cluster at ``address`` (``auto``: the one ``ray start`` began on this machine),
    shipping this package to its nodes, or start a local instance with ``num_cpus`` (default: this
    machine's) and no dashboard; nothing when this process is already connected (its program chose
    its own ``runtime_env``). Returns whether this call connected (and so must shut down)."""
    if ray.is_initialized():
        return False
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, runtime_env=worker_runtime_env(local=False))
        except ConnectionError as error:
            if not _refused_token(error):
                raise
            # Ray sends a token to an address given explicitly only when told to (its security rule).
            raise ConnectionError(f"the Ray cluster at {address} wants a token: export RAY_AUTH_MODE=token, with "
                                  "the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN") from None
    else:
        with _no_usage_report():
            # address="local": never join a cluster found through RAY_ADDRESS or /tmp/ray.
            ray.init(address="local", num_cpus=num_cpus or _machine_cpus(), include_dashboard=False,
                     runtime_env=worker_runtime_env(local=True))
    return True


def _resources(ray, gpus_per_task: Optional[float]) -> Dict:
    if gpus_per_task is None:
        gpus_per_task = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    return {"num_gpus": gpus_per_task} if gpus_per_task > 0 else {"num_cpus": 1}


def _failure(ray, task: Mapping, error: BaseException) -> TaskError:
    """The task's own exception when it raised one (Ray wraps it), else Ray's error (worker or node died)."""
    if isinstance(error, ray.exceptions.RayTaskError):
        cause = error.cause if isinstance(error.cause, BaseException) else error
        return TaskError(describe(task), cause, getattr(error, "traceback_str", "") or str(error))
    return TaskError(describe(task), error, "".join(traceback.format_exception_only(type(error), error)))


def run_tasks_ray(function: Callable, tasks: Sequence[Mapping], *, address: Optional[str] = None,
                  gpus_per_task: Optional[float] = None, num_cpus: Optional[int] = None) -> List[Any]:
    """``function(**task)`` for every task as a Ray task; one entry per task, in task order: the
    result, or a ``TaskError`` naming the task.

    ``address``: a Ray cluster (``ray start --head`` prints it; ``auto`` finds the one on this
    machine); None: a local instance on this machine's CPUs and GPUs (``num_cpus`` to use fewer),
    shut down at the end. ``gpus_per_task``: GPUs per task (fractions share a GPU); None: 1 when the
    cluster has GPUs, else each task takes one CPU.
    """
    ray = require_ray()
    tasks = list(tasks)
    if not tasks:
        return []  # no cluster to start or join for nothing
    started = connect(ray, address, num_cpus=num_cpus)
    pending = []
    try:
        remote = ray.remote(_call).options(max_retries=MAX_RETRIES, **_resources(ray, gpus_per_task))
        pending = [remote.remote(function, dict(task)) for task in tasks]
        outcomes = []
        for task, ref in zip(tasks, pending):
            try:
                outcomes.append(ray.get(ref))
            except ray.exceptions.RayError as error:
                outcomes.append(_failure(ray, task, error))
        pending = []
        return outcomes
    finally:
        for ref in pending:  # interrupted: nothing keeps running after the command stops
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
