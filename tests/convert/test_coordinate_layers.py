"""nc160: a CoordConv layer a newcomer wrote, `meshgrid(linspace(-1, 1, h), linspace(-1, 1, w))` with h, w from
`ops.shape` (images of any size), saved under torch.

Found converting it with `--to all`: only TorchScript was written.
- torch.export fixed the image's size to the traced one: torch.linspace takes its number of points as a plain int.
  The torch exports now compute it as a scaled arange (modelkit.converters._torch_linspace): pt2, ExecuTorch, and
  ONNX by torch.onnx keep the height and width open (ExecuTorch only with the count kept out of symbolic floats).
- The layer does not build under TensorFlow (Keras' linspace asks a symbolic tensor for a Python bool), so the
  TF-based routes cannot load the model. The error said only "Exception encountered when calling AddCoords.call()";
  it now gives the backend and the layer's own error, and ONNX goes on to the torch route instead of stopping at the
  TensorFlow load (a LayerCallError: modelkit.converters.routes).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import _child
from tests.helpers.user_code import keras_beside

COORDS = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="coords")
class AddCoords(keras.layers.Layer):
    def call(self, x):
        b, h, w = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        ys, xs = ops.meshgrid(ops.linspace(-1.0, 1.0, h), ops.linspace(-1.0, 1.0, w), indexing="ij")
        grid = ops.stack([ys, xs], axis=-1)[None]
        return ops.concatenate([x, ops.broadcast_to(grid, (b, h, w, 2))], axis=-1)
'''


def save(folder: str) -> str:
    """img (any height and width, 3 channels) -> AddCoords -> Conv2D -> GlobalMaxPooling2D -> Dense(4), under torch."""
    coords, keras = keras_beside(Path(folder), "coords", COORDS, "torch")
    x = keras.Input((None, None, 3), name="img")
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(coords.AddCoords()(x))
    keras.Model(x, keras.layers.Dense(4, name="out")(keras.layers.GlobalMaxPooling2D()(h))).save(
        Path(folder) / "coords.keras")
    return str(Path(folder) / "coords.keras")


@pytest.mark.slow
def test_a_coordconv_layer_keeps_open_sizes_in_pt2_and_executorch_and_onnx_goes_on_to_the_torch_route(tmp_path):
    src = _child.run("tests.convert.test_coordinate_layers:save", {"folder": str(tmp_path)}, backend="torch",
                     quiet=True)
    results = modelkit.convert(src, to="onnx,pt2,executorch", out_dir=tmp_path / "out",
                               imports=[str(tmp_path / "coords.py")])
    by = {r.format: r for r in results}
    assert by["onnx"].route["taken"] == "torch"
    why = by["onnx"].route["tried"][0]["error"]
    assert "AddCoords.call() under the tensorflow backend: Using a symbolic `tf.Tensor` as a Python `bool`" in why
    for r in results:
        assert r.parity["ok"] and r.max_abs < 1e-4
        assert len({tuple(c["shapes"]["img"][1:3]) for c in r.parity["cases"]}) > 1  # checked at several sizes
    feed = np.random.default_rng(4).uniform(0, 1, (2, 13, 21, 3)).astype(np.float32)  # a size no check used
    onnx_y, pt2_y, et_y = (modelkit.load(by[f].path).predict(feed)["out"] for f in ("onnx", "pt2", "executorch"))
    np.testing.assert_allclose(pt2_y, onnx_y, atol=1e-5)
    np.testing.assert_allclose(et_y, onnx_y, atol=1e-5)
    assert np.ptp(pt2_y) > 0.01
