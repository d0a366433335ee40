"""nc161: `keras.ops.map` over the batch in a user's layer (each row scaled by its own maximum), saved under torch.

Found converting it with `--to all`: Keras' torch map is a Python loop over the rows, so torch.export fixed the batch
and pt2, ExecuTorch and torch.onnx refused it; TVM and OpenVINO, which refuse tf2onnx's Loop and retry from the
torch route's ONNX, failed with them. While exporting, a map over one tensor is torch.vmap of the same function
(modelkit.converters._torch_map). TorchScript's trace keeps Keras' loop and still refuses it, typed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import _child
from modelkit.errors import ModelkitError
from tests.helpers.user_code import keras_beside

ROWS = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="rows")
class PerRowScale(keras.layers.Layer):
    def call(self, x):
        return ops.map(lambda r: r / (ops.max(ops.abs(r)) + 1e-3), x)
'''


def save(folder: str) -> str:
    """x (6) -> Dense -> PerRowScale -> Dense(2), saved under torch."""
    rows, keras = keras_beside(Path(folder), "rows", ROWS, "torch")
    x = keras.Input((6,), name="x")
    out = keras.layers.Dense(2, name="y")(rows.PerRowScale()(keras.layers.Dense(6)(x)))
    keras.Model(x, out).save(Path(folder) / "rows.keras")
    return str(Path(folder) / "rows.keras")


@pytest.mark.slow
def test_a_map_over_the_batch_exports_with_an_open_batch(tmp_path):
    src = _child.run("tests.convert.test_map_over_rows:save", {"folder": str(tmp_path)}, backend="torch", quiet=True)
    imports = [str(tmp_path / "rows.py")]
    results = modelkit.convert(src, to="pt2,tvm", out_dir=tmp_path / "out", imports=imports)
    by = {Path(r.path).name: r for r in results}  # tvm from the torch route's rows.torch.onnx (TVM refuses the Loop)
    assert sorted(by) == ["rows.onnx", "rows.pt2", "rows.torch.onnx", "rows.tvm.so"]
    for r in results:
        assert r.parity["ok"] and r.max_abs < 1e-4, (r.format, r.parity["outputs"])
    feed = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)  # a batch no check used
    pt2_y, tvm_y = (modelkit.load(by[name].path).predict(feed)["y"] for name in ("rows.pt2", "rows.tvm.so"))
    np.testing.assert_allclose(pt2_y, tvm_y, atol=1e-5)
    with pytest.raises(ModelkitError, match=r"the TorchScript trace does not run at batch 1 \(traced at 3\)"):
        modelkit.convert(src, to="torchscript", out_dir=tmp_path / "out", imports=imports)
