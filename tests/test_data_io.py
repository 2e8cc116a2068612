"""Image pairs and reading: a missing partner or an unreadable file is named."""
import numpy as np
import pytest

from mmdrfuse.data.io import match_pairs, read_gray, write_image_atomic
from mmdrfuse.errors import DataError


def test_pairs_missing_partner_named(tmp_path):
    (tmp_path / "ir").mkdir(), (tmp_path / "vi").mkdir()
    img = np.zeros((4, 4), np.uint8)
    write_image_atomic(tmp_path / "ir" / "a.png", img)
    write_image_atomic(tmp_path / "ir" / "b.png", img)
    write_image_atomic(tmp_path / "vi" / "a.png", img)
    with pytest.raises(DataError, match="b.png"):
        match_pairs(tmp_path / "ir", tmp_path / "vi")
    pairs, missing = match_pairs(tmp_path / "ir", tmp_path / "vi", allow_missing=True)
    assert [p[0] for p in pairs] == ["a"] and len(missing) == 1


def test_corrupt_image_named(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.jpg"):
        read_gray(bad)
