"""Training patches: the recipe's grid, the store round trip, seeded choice, atomic builds."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_path
from helpers import run_data_cli, settings

import mmdrfuse.data.patches as patches_module
from mmdrfuse.data.io import read_gray, write_image_atomic
from mmdrfuse.data.llvip import list_pairs
from mmdrfuse.data.patches import (
    load_patch_folders,
    load_patches,
    open_patches,
    patch_grid,
    prepare_patches,
)
from mmdrfuse.errors import DataError


@pytest.fixture(scope="module")
def llvip(make_shared_llvip):
    """SYNTHETIC LLVIP-like pairs of 200x136: a 64-pixel grid of 3 x 2 patches each."""
    return make_shared_llvip(train=5, test=1, size=(200, 136), seed=1)


def test_grid_of_the_paper_recipe():
    grid = patch_grid(1024, 1280, 128, 128)
    assert len(grid) == 80 and grid[0] == (0, 0) and grid[-1] == (896, 1152)
    assert patch_grid(130, 250, 64, 64) == [(0, 0), (0, 64), (0, 128), (64, 0), (64, 64), (64, 128)]
    with pytest.raises(DataError):
        patch_grid(10, 10, 0, 1)


def test_store_round_trip_equals_the_crops(llvip, tmp_path):
    messages = []
    out = prepare_patches(llvip, **settings("prepare_patches", pairs=3, size=64, stride=64, seed=7), out=tmp_path / "store",
                          progress=False, log=messages.append)
    store = load_patches(out)
    meta = json.loads((out / "meta.json").read_text())
    assert len(store) == 3 * 6 and store.ir.shape == (18, 64, 64) and store.ir.dtype == np.uint8
    assert isinstance(store.ir, np.memmap)
    assert meta["seed"] == 7 and len(meta["ids"]) == 3 and meta["recipe"]["pairs_available"] == 5
    pairs = {p.id: p for p in list_pairs(llvip, "train")}
    for index, name in enumerate(store.names):
        pair_id, y, x = name.split("_")
        y, x = int(y[1:]), int(x[1:])
        assert pair_id in meta["ids"]
        np.testing.assert_array_equal(store.ir[index], read_gray(pairs[pair_id].ir)[y:y + 64, x:x + 64])
        np.testing.assert_array_equal(store.vi[index], read_gray(pairs[pair_id].vi)[y:y + 64, x:x + 64])
    index_rows = (out / "index.csv").read_text().splitlines()
    assert index_rows[0] == "patch,name,id,y,x" and len(index_rows) == 19


def test_choice_is_seeded_and_all_pairs_are_taken_when_fewer_exist(llvip, tmp_path):
    def ids(seed, pairs, name):
        prepare_patches(llvip, **settings("prepare_patches", pairs=pairs, size=64, stride=64, seed=seed),
                        out=tmp_path / name, progress=False, log=messages.append)
        return json.loads((tmp_path / name / "meta.json").read_text())["ids"]

    messages = []
    assert ids(0, 2, "a") == ids(0, 2, "b")
    assert len({tuple(ids(seed, 2, "c")) for seed in range(6)}) > 1
    assert ids(0, 50, "d") == ["010001", "010002", "010003", "010004", "010005"]
    assert any("taking all" in m and "5" in m for m in messages)


def test_export_images_and_folder_loading(llvip, tmp_path):
    out = prepare_patches(llvip, **settings("prepare_patches", pairs=2, size=64, stride=32), out=tmp_path / "store",
                          export_images=True, progress=False, log=lambda _: None)
    store = load_patches(out)
    folders = load_patch_folders(out / "ir", out / "vi")
    assert folders.names == sorted(store.names) and len(folders) == 2 * 3 * 5
    order = np.argsort(store.names)
    np.testing.assert_array_equal(folders.ir, store.ir[order])
    np.testing.assert_array_equal(open_patches(out / "ir", out / "vi").vi, store.vi[order])
    np.testing.assert_array_equal(open_patches(out).ir, store.ir)


def test_folder_patches_of_mixed_sizes_name_the_file(tmp_path):
    for name, shape in (("a", (32, 32)), ("b", (32, 40))):
        write_image_atomic(tmp_path / "ir" / f"{name}.png", np.zeros(shape, np.uint8))
        write_image_atomic(tmp_path / "vi" / f"{name}.png", np.zeros(shape, np.uint8))
    with pytest.raises(DataError, match="b.png"):
        load_patch_folders(tmp_path / "ir", tmp_path / "vi")
    (tmp_path / "ir" / "b.png").unlink()
    with pytest.raises(DataError, match="b.png"):
        load_patch_folders(tmp_path / "ir", tmp_path / "vi")


def test_not_a_store(tmp_path):
    with pytest.raises(DataError, match="meta.json"):
        load_patches(tmp_path)


def test_interrupted_build_leaves_nothing_that_looks_complete(llvip, tmp_path, monkeypatch):
    calls = []

    def failing_read(path, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # the second pair's infrared image
            raise KeyboardInterrupt
        return real_read(path, **kwargs)

    real_read = patches_module.read_checked
    monkeypatch.setattr(patches_module, "read_checked", failing_read)
    with pytest.raises(KeyboardInterrupt):
        prepare_patches(llvip, **settings("prepare_patches", pairs=3, size=64, stride=64), out=tmp_path / "store",
                        progress=False, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_output_inside_the_dataset_is_refused(llvip):
    with pytest.raises(DataError, match="inside input"):
        prepare_patches(llvip, **settings("prepare_patches"), out=llvip / "patches", progress=False, log=lambda _: None)


def test_cli_on_the_real_samples(tmp_path, capsys):
    root = shared_path("datasets", "LLVIP-samples")
    assert run_data_cli(["prepare", "patches", "--root", str(root), "--split", "train", "--out", str(tmp_path / "p"), "--quiet"]) == 0
    assert "only 32 usable train pairs" in capsys.readouterr().out
    store = load_patches(tmp_path / "p")
    assert len(store) == 2560 and store.ir.shape[1:] == (128, 128)
    first = sorted(root.joinpath("infrared", "train").iterdir())[0]
    visible = root / "visible" / "train" / first.name
    for index in (0, 79):  # the first image's first and last patch
        y, x = int(store.names[index][8:12]), int(store.names[index][14:18])
        np.testing.assert_array_equal(store.ir[index], read_gray(first)[y:y + 128, x:x + 128])
        np.testing.assert_array_equal(store.vi[index], read_gray(visible)[y:y + 128, x:x + 128])
    assert store.names[79] == f"{first.stem}_y0896_x1152"
