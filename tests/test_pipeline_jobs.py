"""The local executor's ``jobs``: detector runs side by side in worker processes, the same outcomes
in the same order as one after the other, every failure named, nothing left running after an interrupt."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import exit_process, fail_unpicklably, worker_identity

from mmdrfuse.errors import DataError
from mmdrfuse.pipeline.executor import run_local, run_tasks, threads_per_job

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def test_jobs_run_tasks_in_worker_processes_with_a_share_of_the_cores_in_order():
    outcomes = run_tasks(worker_identity, [{"index": i} for i in range(3)], jobs=2)
    assert all(o.ok for o in outcomes), [o.trace for o in outcomes]
    indices, pids, threads = zip(*(o.result for o in outcomes))
    assert indices == (0, 1, 2)  # the order of the tasks, whichever finished first
    assert os.getpid() not in pids and len(set(pids)) == 3  # a fresh process per task
    assert set(threads) == {threads_per_job(2)}
    # jobs 1: in this process, as before
    assert [o.result[1] for o in run_local(worker_identity, [{"index": 0}, {"index": 1}])] == [os.getpid()] * 2


def test_a_failed_task_is_its_outcome_even_when_its_error_does_not_pickle():
    outcomes = run_tasks(fail_unpicklably, [{"message": "first"}, {"message": "second"}], jobs=2)
    assert [o.ok for o in outcomes] == [False, False]
    assert [str(o.error) for o in outcomes] == ["RuntimeError: first", "RuntimeError: second"]
    assert "fail_unpicklably" in outcomes[0].trace  # the worker's traceback comes back


def test_a_worker_that_dies_fails_its_task_instead_of_hanging():
    outcomes = run_tasks(exit_process, [{"code": 3}, {"code": 4}], jobs=2)
    assert not any(o.ok for o in outcomes)
    assert all("terminated abruptly" in str(o.error) or "BrokenProcessPool" in o.trace for o in outcomes)


def test_jobs_below_one_is_one_clear_error():
    with pytest.raises(DataError, match="jobs must be at least 1"):
        run_local(worker_identity, [{"index": 0}, {"index": 1}], jobs=0)


SCRIPT = """
import signal, sys
sys.path[:0] = [{tests!r}, {root!r}]
from mmdrfuse.errors import Terminated
from mmdrfuse.pipeline.executor import run_local
from helpers import write_pid_and_wait

def terminated(*_):
    raise Terminated()

signal.signal(signal.SIGTERM, terminated)  # as the CLI does
try:
    run_local(write_pid_and_wait, [{{"folder": {folder!r}, "index": i}} for i in range(2)], jobs=2)
except Terminated:
    sys.exit(143)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_the_worker_processes_too(tmp_path):
    script = SCRIPT.format(tests=str(TESTS), root=str(ROOT), folder=str(tmp_path))
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("*.pid"))) < 2:
            assert parent.poll() is None and time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
        workers = [int(path.read_text()) for path in tmp_path.glob("*.pid")]
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 143
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
    finally:
        parent.kill()
