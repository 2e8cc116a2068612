"""The output scaling: minmax is bytescale (the paper's protocol), clip keeps the raw range."""
import numpy as np

from mmdrfuse.fusion.scaling import to_uint8


def test_minmax_scaling_is_bytescale():
    image = np.array([[-0.5, 0.0], [0.25, 0.5]])
    assert to_uint8(image, "minmax").tolist() == [[0, 128], [191, 255]]
    assert to_uint8(image, "clip").tolist() == [[0, 0], [64, 128]]
