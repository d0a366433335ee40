"""nc159: `keras.ops.slice_update` in a user's layer (a small GPT whose layer zeroes its first token's features),
over an open sequence length.

Found converting it with `--to all` (saved under torch): tf2onnx wrote an invalid graph ("No Op registered for
XlaDynamicUpdateSlice"), so ONNX came from torch.onnx, whose ScatterND over the open length TVM could not compile;
and ExecuTorch refused Keras' clone-and-write ("Output node ... is already in the inputs ... pass through arguments,
which are not supported in XNNPACK Delegate"). The TF edges now trace it as gathers and a select
(modelkit.converters._tf_slice_update), the ExecuTorch export as slice_scatter
(modelkit.converters._torch_slice_update).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import _child
from tests.helpers.user_code import keras_beside

WRITES = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="writes")
class Writes(keras.layers.Layer):
    """The first step's features zeroed, then features 2..4 of every step tripled, both by slice_update."""
    def call(self, x):
        y = ops.slice_update(x, [0, 0, 0], ops.zeros_like(x[:, :1, :]))
        return ops.slice_update(y, [0, 0, 2], x[:, :, 2:5] * 3.0)
'''


def save(folder: str) -> str:
    """x (steps of 8 features, any number) -> Dense -> Writes -> Dense(3), saved under torch."""
    writes, keras = keras_beside(Path(folder), "writes", WRITES, "torch")
    x = keras.Input((None, 8), name="x")
    h = writes.Writes()(keras.layers.Dense(8)(x))
    keras.Model(x, keras.layers.Dense(3, name="y")(h)).save(Path(folder) / "writes.keras")
    return str(Path(folder) / "writes.keras")


@pytest.mark.slow
def test_slice_update_over_an_open_length_converts_by_tf2onnx_to_tvm_and_to_executorch(tmp_path):
    src = _child.run("tests.convert.test_slice_update:save", {"folder": str(tmp_path)}, backend="torch", quiet=True)
    results = modelkit.convert(src, to="onnx,tvm,executorch", out_dir=tmp_path / "out",
                               imports=[str(tmp_path / "writes.py")])
    by = {r.format: r for r in results}
    assert by["onnx"].route["taken"] == "tf2onnx" and not by["onnx"].route.get("tried")
    for r in results:
        assert r.parity["ok"] and r.max_abs < 1e-4, (r.format, r.parity["outputs"])
    feed = np.random.default_rng(2).standard_normal((3, 11, 8)).astype(np.float32)  # a length no check used
    outs = {r.format: modelkit.load(r.path).predict(feed)["y"] for r in results}
    for fmt in ("tvm", "executorch"):
        np.testing.assert_allclose(outs[fmt], outs["onnx"], atol=1e-5)
    assert outs["onnx"].shape == (3, 11, 3) and np.ptp(outs["onnx"]) > 0.1
