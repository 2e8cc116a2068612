"""The Ray executor (``mmdrfuse.pipeline.ray_executor``) on a local Ray instance and on a one-node
cluster from ``ray start --head``, 2 CPUs each: the same answers as a plain loop, a failed task
reported by name while the others finish, workers that run the driver's own ``mmdrfuse``, and one
real toy detector training giving the predictions and mAP of a direct call. Skipped without Ray,
except the install message."""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mmdrfuse.errors import DataError
from mmdrfuse.pipeline import ray_executor
from mmdrfuse.pipeline.ray_executor import TaskError, require_ray, run_tasks_ray

REPO = Path(__file__).resolve().parents[1]


def square_sum(method, seed, values):
    return {"method": method, "seed": seed, "total": sum(v * v for v in values) + seed}


def square_sum_and_module(**task):
    import mmdrfuse

    return square_sum(**task), mmdrfuse.__file__


def fail_on(method, seed, bad):
    if (method, seed) == bad:
        raise DataError(f"bad image in {method}/seed{seed}.png")
    if method == "crash" and seed == bad[1]:
        os._exit(3)  # the worker dies: Ray's error, not the task's
    return f"{method}-{seed}"


def where_is_mmdrfuse():
    import mmdrfuse
    import mmdrfuse.pipeline.ray_executor as module

    return mmdrfuse.__file__, Path(module.__file__).read_text()


@pytest.fixture(scope="module")
def ray():
    # A local instance turns Ray's token authentication on in this process's environment: undone after.
    auth_mode = os.environ.get("RAY_AUTH_MODE")
    ray = pytest.importorskip("ray")
    # Workers cannot import this test module (tests/ is on no worker's path): its functions travel by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    if auth_mode is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = auth_mode


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(ray):
    """A one-node Ray cluster as a user starts one (``ray start --head``), 2 CPUs, in its own folder
    (so no other program's ``ray.init()`` finds it), started in a folder outside the checkout as on
    a cluster's node; its address. Stopped by its process group (``ray stop`` would stop every Ray
    on the machine)."""
    if ray.is_initialized():
        ray.shutdown()
    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths live under it
    port = free_port()
    command = ["ray", "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
               "--disable-usage-stats", f"--temp-dir={folder}", "--block"]
    log = open(folder / "start.log", "w")
    # Without token authentication: Ray reads RAY_AUTH_MODE once, on import, and ultralytics may have
    # imported it before this module could choose (docs/scaling.md says what a user sets).
    head = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    address = f"127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                ray_executor.check_reachable(address, timeout=1)
                break
            except ConnectionError:
                assert head.poll() is None, f"ray start --head failed: {(folder / 'start.log').read_text()[-2000:]}"
                time.sleep(0.5)
        yield address
    finally:
        stop_group(head)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def stop_group(process):
    """SIGKILL to the head's process group (gcs, raylet, workers): a throwaway cluster; its graceful
    stop takes half a minute here."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_require_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as where it is not installed
    with pytest.raises(ray_executor.RayNotInstalled) as caught:
        require_ray()
    message = str(caught.value)
    assert "pip install 'mmdrfuse[ray]'" in message and "\n" not in message
    assert isinstance(caught.value, RuntimeError)  # the CLI prints it in one line


def test_describe_names_method_and_seed_else_the_short_arguments(tmp_path):
    assert ray_executor.describe({"method": "max", "seed": 2, "values": [1, 2]}) == "(method='max', seed=2)"
    described = ray_executor.describe({"data_yaml": tmp_path / "d.yaml", "epochs": 3, "extra": {"a": 1}})
    assert described == f"(data_yaml={tmp_path / 'd.yaml'}, epochs=3)"


def test_a_local_instance_gives_the_plain_loops_results_runs_this_package_and_is_shut_down(ray, tmp_path,
                                                                                          monkeypatch):
    """Started from a folder where, unless installed, ``mmdrfuse`` is not found: the workers still
    import the driver's package (``PYTHONPATH`` is set for them only then)."""
    import mmdrfuse

    assert not ray.is_initialized()
    monkeypatch.chdir(REPO)
    assert ray_executor.worker_runtime_env(local=True) is None  # `python3 -m` in the checkout: nothing to add
    monkeypatch.chdir(tmp_path)
    env = ray_executor.worker_runtime_env(local=True)
    assert (env is not None) == (not ray_executor.local_workers_find_this_package())
    if env is not None:
        assert env["env_vars"]["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)
    tasks = [{"method": method, "seed": seed, "values": list(range(seed + 3))}
             for method in ("average", "max", "student") for seed in (0, 1)]
    outcomes = run_tasks_ray(square_sum_and_module, tasks, num_cpus=2)
    assert [result for result, _ in outcomes] == [square_sum(**task) for task in tasks]
    assert {Path(file).resolve() for _, file in outcomes} == {Path(mmdrfuse.__file__).resolve()}
    assert not ray.is_initialized()
    assert run_tasks_ray(square_sum, [], address="ray://nowhere:1") == []  # no task: no cluster joined


def test_an_unreachable_cluster_is_one_line_at_once(ray):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ConnectionError, match=f"no Ray cluster answers at {address}"):
        run_tasks_ray(square_sum, [{"method": "max", "seed": 0, "values": []}], address=address)
    assert not ray.is_initialized()


def test_a_failed_task_is_named_and_the_others_complete(ray, cluster):
    tasks = [{"method": method, "seed": seed, "bad": ("max", 1)} for method in ("average", "max", "crash")
             for seed in (0, 1)]
    outcomes = run_tasks_ray(fail_on, tasks, address=cluster)
    assert not ray.is_initialized()  # disconnected; the cluster runs on
    assert outcomes[:3] == ["average-0", "average-1", "max-0"] and outcomes[4] == "crash-0"
    failed = outcomes[3]
    assert isinstance(failed, TaskError) and isinstance(failed.error, DataError)
    assert str(failed) == "task (method='max', seed=1) failed: DataError: bad image in max/seed1.png"
    assert "fail_on" in failed.trace
    crashed = outcomes[5]
    assert isinstance(crashed, TaskError) and "(method='crash', seed=1)" in str(crashed)
    assert isinstance(crashed.error, ray.exceptions.RayError)


def test_cluster_workers_run_the_drivers_code_and_a_connected_program_keeps_its_session(ray, cluster, tmp_path,
                                                                                        monkeypatch):
    """The driver's package is shipped to the cluster: workers on a node without the checkout (here:
    a driver started outside it, so Ray puts no checkout on their path) run that copy, not the
    ``mmdrfuse`` installed there. A program already connected keeps its session (and its own
    ``runtime_env``)."""
    import mmdrfuse

    monkeypatch.chdir(tmp_path)
    [(worker_file, worker_source)] = run_tasks_ray(where_is_mmdrfuse, [{}], address=cluster)
    assert worker_source == Path(ray_executor.__file__).read_text()
    assert "runtime_resources" in Path(worker_file).parts and Path(worker_file).parent.name == "mmdrfuse"
    assert Path(worker_file).read_text() == Path(mmdrfuse.__file__).read_text()
    ray.init(address=cluster, runtime_env=ray_executor.worker_runtime_env(local=False))  # the program's choice
    try:
        assert run_tasks_ray(square_sum, [{"method": "max", "seed": 1, "values": [2]}]) == [square_sum("max", 1, [2])]
        assert ray.is_initialized()
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_a_toy_detector_trained_through_ray_equals_a_direct_call(cluster, tmp_path, one_thread):
    """The acceptance core: a detector run gives the same results through Ray as in this process
    (CPU, deterministic; one intra-op thread each, as a one-CPU Ray task has)."""
    import json

    from test_detection_yolo_val import toy_dataset

    from mmdrfuse.detection.yolo_train import train_detector

    data = toy_dataset(tmp_path / "toy", images=16)
    settings = dict(model="yolov5n.yaml", weights=None, epochs=1, batch=8, imgsz=96, optimizer="SGD", lr0=0.04,
                    seed=3, warmup_epochs=0, device="cpu", workers=0, quiet=True, extra={"val": False})
    with pytest.warns(RuntimeWarning, match="from scratch"):
        direct = train_detector(data, tmp_path / "direct", **settings)
    [through_ray] = run_tasks_ray(train_detector, [{"data_yaml": data, "out_dir": tmp_path / "ray", **settings}],
                                  address=cluster)
    assert not isinstance(through_ray, Exception), through_ray
    predictions = json.loads(Path(direct["predictions"]).read_text())
    assert predictions  # the comparison below is of real boxes, not of two empty lists
    assert json.loads(Path(through_ray["predictions"]).read_text()) == predictions
    for key in ("map50_95", "map50", "precision", "recall", "coco", "lamr", "seed", "protocol"):
        assert through_ray[key] == direct[key], key
    assert Path(through_ray["weights"]).parent.parent.parent == tmp_path / "ray"


def test_run_tasks_dispatches_to_ray_and_turns_task_errors_into_outcomes(monkeypatch):
    from mmdrfuse.pipeline import executor

    calls = []

    def fake_ray(function, tasks, *, address=None):
        calls.append((function, list(tasks), address))
        return [function(**tasks[0]), TaskError("(method='max', seed=1)", DataError("bad"), "trace")]

    monkeypatch.setattr(ray_executor, "require_ray", lambda: None)
    monkeypatch.setattr(ray_executor, "run_tasks_ray", fake_ray)
    tasks = [{"method": "a", "seed": 0, "values": [1, 2]}, {"method": "max", "seed": 1, "values": []}]
    first, second = executor.run_tasks(square_sum, tasks, executor="ray", address="auto")
    assert calls == [(square_sum, tasks, "auto")]
    assert first.ok and first.result == {"method": "a", "seed": 0, "total": 5}
    assert not second.ok and isinstance(second.error, DataError) and second.trace == "trace"


def _per_method(report: Path):
    import json

    methods = json.loads((report / "results.json").read_text())["methods"]
    return {name: {k: row[k] for k in ("map50_95", "map50", "coco", "lamr", "per_seed")} for name, row in methods.items()}


@pytest.mark.slow
def test_detect_through_ray_gives_the_local_executors_results(ray, cluster, make_shared_llvip, tmp_path, one_thread):
    """The acceptance test of issue 15: ``detect --executor ray`` on a 2-CPU Ray cluster at toy
    scale gives the same per-method results as ``--executor local``."""
    from mmdrfuse.cli import main

    llvip = make_shared_llvip(train=8, test=4, size=(128, 96))
    common = ["detect", "--root", str(llvip), "--builtin", "infrared,max", "--train", "8", "--val", "4",
              "--weights", "none", "--model", "yolov5n.yaml", "--epochs", "1", "--batch", "4", "--imgsz", "64",
              "--device", "cpu", "--seeds", "0,1", "--bootstrap", "50", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--executor", "ray", "--ray-address", cluster]) == 0
    local, remote = _per_method(tmp_path / "local" / "report"), _per_method(tmp_path / "ray" / "report")
    assert set(local) == {"infrared", "max"} and remote == local
