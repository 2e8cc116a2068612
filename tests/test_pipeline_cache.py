"""The one caching scheme (mmdrfuse.pipeline.cache): done stages are skipped, changed settings
rerun, interrupted stages continue, --from forces a stage and those after it, content digests
are memoised by (path, size, mtime_ns)."""
import json
import os

import pytest

from mmdrfuse.errors import DataError
from mmdrfuse.pipeline.cache import ContentHashes, Run
from mmdrfuse.pipeline.run import STAGES


def write_output(folder, *, calls, name):
    calls.append(name)
    (folder / "output.txt").write_text(name)
    return {"file": str(folder / "output.txt")}


def run_two(out, calls, *, first=None, second=None, force_from=None, inputs=None):
    run = Run(out, STAGES, force_from, log=lambda *a: None)
    run.stage("prepare", write_output, settings=first or {"pairs": 4}, inputs=inputs, calls=calls, name="prepare")
    run.stage("fuse", write_output, item="max", settings=second or {"methods": ["max"]}, depends=["prepare"],
              calls=calls, name="fuse")
    return run


def test_done_stage_is_skipped(tmp_path):
    calls = []
    first = run_two(tmp_path, calls)
    assert calls == ["prepare", "fuse"] and first.ran == ["prepare", "fuse/max"]
    folder = tmp_path / f"fuse-max-{first.keys['fuse/max']}"
    assert json.loads((folder / "DONE").read_text())["file"] == str(folder / "output.txt")
    again = run_two(tmp_path, calls)
    assert calls == ["prepare", "fuse"] and again.ran == []
    assert again.outputs["fuse/max"]["file"] == first.outputs["fuse/max"]["file"]


def test_changed_setting_reruns_that_stage_and_those_after(tmp_path):
    calls = []
    first = run_two(tmp_path, calls)
    calls.clear()
    second = run_two(tmp_path, calls, second={"methods": ["max", "average"]})
    assert calls == ["fuse"]
    assert second.keys["prepare"] == first.keys["prepare"] and second.keys["fuse/max"] != first.keys["fuse/max"]
    calls.clear()
    third = run_two(tmp_path, calls, first={"pairs": 8})
    assert calls == ["prepare", "fuse"]  # an upstream change changes the downstream key
    assert third.keys["fuse/max"] not in (first.keys["fuse/max"], second.keys["fuse/max"])


def test_changed_input_content_reruns_and_the_versions_enter_the_key(tmp_path, monkeypatch):
    from mmdrfuse.pipeline import cache

    data = tmp_path / "data.bin"
    data.write_bytes(b"abcd")
    calls = []
    first = run_two(tmp_path / "run", calls, inputs={"data": data})
    data.write_bytes(b"abce")  # same size, same path
    calls.clear()
    assert run_two(tmp_path / "run", calls, inputs={"data": data}).keys["prepare"] != first.keys["prepare"]
    assert calls == ["prepare", "fuse"]
    calls.clear()
    monkeypatch.setattr(cache, "versions", lambda: {"mmdrfuse": "0", "ultralytics": "x", "torch": "y"})
    run_two(tmp_path / "run", calls, inputs={"data": data})
    assert calls == ["prepare", "fuse"]  # another ultralytics or torch: nothing reused


def test_interrupted_stage_runs_again_and_finished_ones_do_not(tmp_path):
    calls = []

    def crash(folder):
        (folder / "half.txt").write_text("partial")
        raise KeyboardInterrupt

    run = Run(tmp_path, STAGES, log=lambda *a: None)
    run.stage("prepare", write_output, settings={"pairs": 4}, calls=calls, name="prepare")
    with pytest.raises(KeyboardInterrupt):
        run.stage("fuse", crash, item="max", settings={"methods": ["max"]}, depends=["prepare"])
    assert not (tmp_path / f"fuse-max-{run.keys['fuse/max']}" / "DONE").exists()
    resumed = run_two(tmp_path, calls)
    assert calls == ["prepare", "fuse"] and resumed.ran == ["fuse/max"]


def test_from_forces_the_stage_and_later_ones(tmp_path):
    calls = []
    run_two(tmp_path, calls)
    calls.clear()
    forced = run_two(tmp_path, calls, force_from="fuse")
    assert calls == ["fuse"] and forced.ran == ["fuse/max"]
    calls.clear()
    run_two(tmp_path, calls, force_from="prepare")
    assert calls == ["prepare", "fuse"]
    with pytest.raises(DataError, match="--from"):
        Run(tmp_path, STAGES, "nonsense")


def test_method_names_must_be_plain(tmp_path):
    run = Run(tmp_path / "run", STAGES, log=lambda *a: None)
    for name in ("../../victim", "a/b", ".hidden", ""):
        with pytest.raises(DataError, match="plain name"):
            run.stage("detect", write_output, item=name, settings={}, calls=[], name=name)
    assert not (tmp_path / "victim").exists()


def test_digests_are_memoised_by_size_and_mtime(tmp_path):
    image = tmp_path / "a.bmp"
    image.write_bytes(bytes(100))
    hashes = ContentHashes(tmp_path / "hashes.json")
    first = hashes.file(image)
    hashes.save()
    stat = image.stat()
    image.write_bytes(bytes(99) + b"\x01")  # new content, then the old size and mtime put back
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = ContentHashes(tmp_path / "hashes.json")
    assert again.file(image) == first  # read from the memo: the file was not read again
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert again.file(image) != first
