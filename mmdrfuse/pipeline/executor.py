"""Independent tasks (one detector per method and training seed) through a small executor interface.

The contract, shared with any other executor (e.g. ``mmdrfuse.pipeline.ray_executor``, which
has a ``run_tasks(function, tasks, *, address)`` of the same meaning):

- ``function`` is a plain top-level function and each task a mapping of picklable keyword
  arguments: ``function(**task)``;
- the answer is one ``Outcome`` per task, in the order of ``tasks``: its ``result``, or its
  ``error`` (the exception) and ``trace`` (the formatted traceback); one failed task does not
  stop the others;
- an interrupt (Ctrl-C, SIGTERM) is not a task's error: it stops the run.
"""
from __future__ import annotations

import importlib
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
    if executor not in EXECUTORS:
        raise DataError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    try:
        module = importlib.import_module(f"mmdrfuse.pipeline.{executor}_executor")
    except ImportError as error:
        raise DataError(f"the {executor} executor is not available here ({error})") from None
    return module.run_tasks(function, tasks, address=address)
