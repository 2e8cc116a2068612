"""Independent tasks (one detector per method and training seed) through a small executor interface.

The contract, shared with the Ray executor (``mmdrfuse.pipeline.ray_executor.run_tasks_ray``,
whose answers :func:`run_tasks` turns into the same outcomes):

- ``function`` is a plain top-level function and each task a mapping of picklable keyword
  arguments: ``function(**task)``;
- the answer is one ``Outcome`` per task, in the order of ``tasks``: its ``result``, or its
  ``error`` (the exception) and ``trace`` (the formatted traceback); one failed task does not
  stop the others;
- an interrupt (Ctrl-C, SIGTERM) is not a task's error: it stops the run.

The local executor runs ``jobs`` tasks at once, each in a process of its own with an equal share
of this machine's cores as torch threads: a detector's training on a small CPU keeps about one
core busy whatever its thread count (data loading, augmentation and small convolutions do not
scale), so two one-thread runs on two cores finish in about half the time of two two-thread runs
one after the other.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Sequence

from mmdrfuse.errors import DataError

EXECUTORS = ("local", "ray")


@dataclass
class Outcome:
    """What one task gave: ``result``, or ``error`` and its ``trace``."""

    result: Any = None
    error: Optional[BaseException] = None
    trace: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


class TasksFailed(RuntimeError):
    """Some tasks failed (the message names each); the others finished."""


def _outcome(function: Callable, task: Mapping) -> Outcome:
    try:
        return Outcome(result=function(**task))
    except Exception as error:  # noqa: BLE001 - a task's failure is its outcome; KeyboardInterrupt is not caught
        return Outcome(error=error, trace=traceback.format_exc())


def _picklable(outcome: Outcome) -> Outcome:
    """``outcome`` as a worker process can send it back: an error that does not pickle becomes a
    RuntimeError with its type and message (its trace is kept)."""
    import pickle

    if outcome.error is not None:
        try:
            pickle.dumps(outcome.error)
        except Exception:  # noqa: BLE001 - any pickling failure
            outcome.error = RuntimeError(f"{type(outcome.error).__name__}: {outcome.error}")
    return outcome


def _worker_outcome(function: Callable, task: Mapping) -> Outcome:
    return _picklable(_outcome(function, task))


def _start_worker(threads: int) -> None:
    """A worker process: ``threads`` torch threads; Ctrl-C is the parent's to handle (it ends the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    """Torch threads of each of ``jobs`` processes: an equal share of the cores, at least one."""
    return max(1, available_cores() // jobs)


# A fresh process per task (Python 3.11+): no state of one detector's run (ultralytics' globals,
# memory) carries over to the next.
FRESH_PROCESS_PER_TASK = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}


def _end_workers(pool) -> None:
    """Stop the workers of ``pool`` now, tasks running or not (Python 3.14 has this as a method)."""
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


def run_local(function: Callable, tasks: Sequence[Mapping], jobs: int = 1, progress: Optional[str] = None) -> List[Outcome]:
    """Every task on this machine: in this process one after the other (``jobs`` 1: a detector's
    training then uses every core), or ``jobs`` at a time in fresh worker processes (spawned: no
    state of this one is inherited; one process per task) with :func:`threads_per_job` threads each.
    A worker that dies (killed for memory, crashed) fails its task and those not yet finished.
    Workers import the caller's main module: a script calling this with ``jobs`` > 1 needs an
    ``if __name__ == "__main__":`` guard (docs/scaling.md).
    ``progress``: with ``jobs`` > 1, a progress bar of the tasks finished, with this title."""
    if jobs < 1:
        raise DataError(f"jobs must be at least 1, got {jobs}")
    if jobs == 1 or len(tasks) < 2:
        return [_outcome(function, task) for task in tasks]
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    processes = min(jobs, len(tasks))
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                               initargs=(threads_per_job(processes),), **FRESH_PROCESS_PER_TASK)
    bar = tqdm(total=len(tasks), desc=progress, unit="task", disable=not progress)
    try:
        futures = [pool.submit(_worker_outcome, function, task) for task in tasks]
        for future in futures:
            future.add_done_callback(lambda _: bar.update())
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result())
            except Exception as error:  # noqa: BLE001 - the worker died (BrokenProcessPool): the task failed
                outcomes.append(Outcome(error=error, trace=f"{type(error).__name__}: {error}"))
    except BaseException:
        _end_workers(pool)  # Ctrl-C or SIGTERM: no task keeps running behind the interrupted run
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        bar.close()  # also after an interrupt: the terminal line is not left half-drawn
    pool.shutdown(wait=True)
    return outcomes


def run_tasks(function: Callable, tasks: Sequence[Mapping], *, executor: str = "local",
              address: Optional[str] = None, jobs: int = 1, progress: Optional[str] = None) -> List[Outcome]:
    """``function(**task)`` for every task with ``executor`` (``local``: this machine, ``jobs`` at a
    time; ``ray``: a Ray cluster at ``address``, from ``mmdrfuse.pipeline.ray_executor``, which
    schedules them itself); one ``Outcome`` per task. ``progress``: see :func:`run_local`."""
    if executor == "local":
        return run_local(function, tasks, jobs, progress)
    if executor != "ray":
        raise DataError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    from mmdrfuse.pipeline import ray_executor

    ray_executor.require_ray()  # RayNotInstalled: one line saying how to install it
    answers = ray_executor.run_tasks_ray(function, tasks, address=address)
    return [Outcome(error=answer.error, trace=answer.trace) if isinstance(answer, ray_executor.TaskError)
            else Outcome(result=answer) for answer in answers]
