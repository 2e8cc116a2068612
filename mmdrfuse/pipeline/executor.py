"""Independent tasks (one detector per method and training seed) through a small executor interface.

The contract, shared with the Ray executor (``mmdrfuse.pipeline.ray_executor.run_tasks_ray``,
whose answers :func:`run_tasks` turns into the same outcomes):

- ``function`` is a plain top-level function and each task a mapping of picklable keyword
  arguments: ``function(**task)``;
- the answer is one ``Outcome`` per task, in the order of ``tasks``: its ``result``, or its
  ``error`` (the exception) and ``trace`` (the formatted traceback); one failed task does not
  stop the others;
- an interrupt (Ctrl-C, SIGTERM) is not a task's error: it stops the run.
"""
from __future__ import annotations

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


def run_local(function: Callable, tasks: Sequence[Mapping]) -> List[Outcome]:
    """Every task in this process, one after the other (a detector's training uses every core)."""
    outcomes = []
    for task in tasks:
        try:
            outcomes.append(Outcome(result=function(**task)))
        except Exception as error:  # noqa: BLE001 - a task's failure is its outcome; KeyboardInterrupt is not caught
            outcomes.append(Outcome(error=error, trace=traceback.format_exc()))
    return outcomes


def run_tasks(function: Callable, tasks: Sequence[Mapping], *, executor: str = "local",
              address: Optional[str] = None) -> List[Outcome]:
    """``function(**task)`` for every task with ``executor`` (``local``: this process; ``ray``: a Ray
    cluster at ``address``, from ``mmdrfuse.pipeline.ray_executor``); one ``Outcome`` per task."""
    if executor == "local":
        return run_local(function, tasks)
    if executor != "ray":
        raise DataError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    from mmdrfuse.pipeline import ray_executor

    ray_executor.require_ray()  # RayNotInstalled: one line saying how to install it
    answers = ray_executor.run_tasks_ray(function, tasks, address=address)
    return [Outcome(error=answer.error, trace=answer.trace) if isinstance(answer, ray_executor.TaskError)
            else Outcome(result=answer) for answer in answers]
