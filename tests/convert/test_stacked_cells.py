"""nc79: a sequence classifier a newcomer writes from parts: RNN(StackedRNNCells([LSTMCell, GRUCell])) over an open
length, an EinsumDense, and a pooling layer of their own over time (ops.norm and ops.median), trained under JAX.

Found converting it with `--to all`: TFLite's loop route called the cells with their states flattened
("IndexError: list index out of range" in LSTMCell.call: a stack of cells takes one list of states per cell),
then refused the median (Keras' TF quantile computes its indices in float64: "Ceil, Mul, Sub, which are no TFLite
builtin ops"); pt2 failed with torch's own "Constraints violated (batch, series_1)" where TorchScript named the
layer that fixes the length."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit.errors import UnsupportedConversionError
from tests.helpers.user_code import keras_beside

POOLS = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="pools")
class NormMedianPool(keras.layers.Layer):
    def call(self, x):
        return ops.concatenate([ops.norm(x, axis=1), ops.median(x, axis=1)], axis=-1)

    def compute_output_shape(self, shape):  # Keras' TF backend infers no width for a median over an open axis
        return (shape[0], 2 * shape[-1])


@keras.saving.register_keras_serializable(package="pools")
class QuantilePool(keras.layers.Layer):
    """Every interpolation of ops.quantile over time, a q vector among them, and a median that keeps its axis."""
    def call(self, x):
        parts = [ops.quantile(x, 0.3, axis=1, method=m) for m in ("lower", "higher", "nearest", "midpoint")]
        quartiles = ops.quantile(x, [0.25, 0.75], axis=1)  # (2, batch, features): q's axis first
        parts += [quartiles[0], quartiles[1], ops.median(x, axis=1, keepdims=True)[:, 0]]
        return ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, shape):
        return (shape[0], 7 * shape[-1])
'''


def _series(batch: int, length: int) -> np.ndarray:
    return np.random.default_rng(length).normal(size=(batch, length, 3)).astype(np.float32)


def _stacked(tmp_path):
    pools, keras = keras_beside(tmp_path, "pools", POOLS)
    x = keras.Input((None, 3), name="series")
    cells = keras.layers.StackedRNNCells([keras.layers.LSTMCell(6), keras.layers.GRUCell(4)])
    h = keras.layers.RNN(cells, return_sequences=True)(x)
    h = keras.layers.EinsumDense("btc,cd->btd", output_shape=(None, 5), bias_axes="d")(h)
    keras.Model(x, keras.layers.Dense(3, activation="softmax", name="freq")(pools.NormMedianPool()(h))).save(
        tmp_path / "seq.keras")
    return tmp_path / "seq.keras", [str(tmp_path / "pools.py")]


@pytest.mark.slow
def test_a_stack_of_cells_with_a_median_over_time_converts_to_tflite_at_any_length(tmp_path):
    src, imports = _stacked(tmp_path)
    (result,) = modelkit.convert(src, "tflite", out_dir=tmp_path / "out", imports=imports)
    assert result.route["taken"] == "loop"
    keras_model, lite = modelkit.load(src, imports=imports), modelkit.load(result.path)
    for batch, length in ((1, 1), (2, 6), (3, 23)):
        got, want = lite.predict(_series(batch, length))["freq"], keras_model.predict(_series(batch, length))["freq"]
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"length {length}")


@pytest.mark.slow
def test_pt2_names_the_cell_that_fixes_the_length(tmp_path):
    src, imports = _stacked(tmp_path)
    with pytest.raises(UnsupportedConversionError, match=r"torch.export cannot keep dimension 1 of input 'series' "
                                                         r"dynamic: layer 'lstm_cell\w*' \(LSTMCell\) turns it into "
                                                         r"the traced size"):
        modelkit.convert(src, "pt2", out_dir=tmp_path / "out", imports=imports)


@pytest.mark.slow
def test_every_quantile_method_over_an_open_length_converts_to_tflite(tmp_path):
    pools, keras = keras_beside(tmp_path, "pools", POOLS)
    x = keras.Input((None, 4), name="series")
    keras.Model(x, pools.QuantilePool(name="q")(x)).save(tmp_path / "q.keras")
    imports = [str(tmp_path / "pools.py")]
    (result,) = modelkit.convert(tmp_path / "q.keras", "tflite", out_dir=tmp_path / "out", imports=imports)
    keras_model, lite = modelkit.load(tmp_path / "q.keras", imports=imports), modelkit.load(result.path)
    for length in (1, 2, 7, 30):
        series = np.random.default_rng(length).normal(size=(2, length, 4)).astype(np.float32)
        want = keras_model.predict(series)["q"]
        assert want.shape == (2, 28)
        np.testing.assert_allclose(lite.predict(series)["q"], want, atol=1e-6, err_msg=f"length {length}")
        np.testing.assert_allclose(want[:, 24:], np.median(series, axis=1), atol=1e-6)  # numpy agrees
        np.testing.assert_allclose(want[:, 16:20], np.quantile(series, 0.25, axis=1), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("fmt, engine", [("executorch", "executorch"), ("tvm", "tvm")])
def test_every_quantile_method_over_a_known_length_runs_in(tmp_path, fmt, engine):
    """torch.export kept aten.quantile, which ExecuTorch has no kernel for ("error 0x14: operator missing"); TVM
    computed the indices from the ONNX Shape as integers (a median of 20 values was the 10th: parity failed)."""
    pytest.importorskip(engine)
    pools, keras = keras_beside(tmp_path, "pools", POOLS)
    x = keras.Input((20, 4), name="series")
    keras.Model(x, pools.QuantilePool(name="q")(x)).save(tmp_path / "q.keras")
    imports = [str(tmp_path / "pools.py")]
    result = modelkit.convert(tmp_path / "q.keras", fmt, out_dir=tmp_path / "out", imports=imports)[-1]  # tvm: last
    keras_model, program = modelkit.load(tmp_path / "q.keras", imports=imports), modelkit.load(result.path)
    for batch in (1, 3):
        series = np.random.default_rng(batch).normal(size=(batch, 20, 4)).astype(np.float32)
        np.testing.assert_allclose(program.predict(series)["q"], keras_model.predict(series)["q"], atol=1e-6)
