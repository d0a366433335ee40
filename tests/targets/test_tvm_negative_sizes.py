"""A TVM library run at a size where a shape it computes goes negative (a Cropping1D((1, 1)) at length 1) throws
std::bad_alloc, which modelkit reported as "ran out of memory ... it needs at least 8 bytes; 22 GiB available"
(nc76). With inputs that small and gigabytes mappable, the error now says what is likely: a negative size."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit.errors import ResourceError
from tests.convert.test_dynamic_dims import _onnx


def test_bad_alloc_on_tiny_inputs_points_at_a_negative_size(tmp_path):
    pytest.importorskip("tvm")
    src = _onnx(tmp_path / "crop.onnx", "crop")
    lib = modelkit.compile(src, out=tmp_path / "crop.tvm.so", verify=False).path
    model = modelkit.load(lib)
    x = np.ones((1, 4, 4), np.float32)
    np.testing.assert_allclose(model.predict(x)["y"], modelkit.load(src).predict(x)["y"], atol=1e-5)
    with pytest.raises(ResourceError, match=r"could not allocate a buffer running this model on inputs of shape "
                                            r"\(1, 1, 4\) \(16 bytes\), though 4\.0 GiB .* can be mapped: a size the "
                                            r"model computes from its input shapes is likely negative at these shapes"
                                            r".*\(tvm said: InternalError: std::bad_alloc\)"):
        model.predict(np.ones((1, 1, 4), np.float32))
