"""nc88: a quantile forecaster over series of any length (torch backend) whose trend layer takes a decayed product
(`keras.ops.cumprod` over time). TFLite refused it (Cumprod is no builtin) and tf2onnx wrote a Loop, which TVM's
importer refused; it is now a log-depth scan over a known axis and sign * exp(cumsum(log|x|)) over an open one
(modelkit.converters._tf_cumprod)."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from tests.helpers.cells import assert_artifacts_agree
from tests.helpers.user_code import keras_beside

DECAY = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="decay")
class Decay(keras.layers.Layer):
    """A decayed product over time (any length) beside a product over the features (a known axis)."""
    def call(self, x):
        return ops.concatenate([ops.cumprod(ops.sigmoid(x) * 0.5 + 0.5, axis=1), ops.cumprod(x, axis=-1)], axis=-1)
'''


def _refused(*args, **kwargs):
    raise AssertionError("floats are stepped, not passed on")


@pytest.mark.parametrize("axis, shape", [(1, (2, 9, 3)), (-1, (2, 3, 16)), (0, (5, 2)), (None, (3, 4))])
def test_the_stepped_cumprod_is_numpys_over_known_and_open_axes(axis, shape):
    import tensorflow as tf

    from modelkit.converters._tf_cumprod import stepped_cumprod

    cumprod = stepped_cumprod(_refused)
    x = np.random.default_rng(0).uniform(-1.5, 1.5, shape).astype(np.float32)
    x.flat[3] = 0.0  # a zero, then negatives after it
    want = np.cumprod(x, axis=axis) if axis is not None else np.cumprod(x.ravel())
    np.testing.assert_allclose(cumprod(x, axis=axis).numpy(), want, rtol=1e-6, atol=1e-7)  # known: the scan
    traced = tf.function(lambda t: cumprod(t, axis=axis), input_signature=[tf.TensorSpec([None] * len(shape))])
    assert "Cumprod" not in {op.type for op in traced.get_concrete_function().graph.get_operations()}
    np.testing.assert_allclose(traced(x).numpy(), want, rtol=1e-5, atol=1e-7)  # open: by logarithms


def test_the_scan_keeps_infinities_and_integers_keep_tensorflows_cumprod():
    import tensorflow as tf

    from modelkit.converters._tf_cumprod import stepped_cumprod

    x = np.array([2.0, np.inf, -1.0, 0.0, 3.0], np.float32)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(stepped_cumprod(_refused)(x, axis=0).numpy(), np.cumprod(x))
    ints = stepped_cumprod(lambda x, axis=None, dtype=None: tf.math.cumprod(x, axis=axis))
    assert ints(np.array([2, 3, 4]), axis=0).numpy().tolist() == [2, 6, 24]


@pytest.mark.slow
def test_a_decay_layer_converts_to_tflite_and_onnx_without_a_loop_at_any_length(tmp_path):
    import onnx

    decay, keras = keras_beside(tmp_path, "decay", DECAY)
    x = keras.Input((None, 3), name="series")
    keras.Model(x, keras.layers.Dense(2, name="out")(decay.Decay()(x))).save(tmp_path / "decay.keras")
    imports = [str(tmp_path / "decay.py")]
    results = modelkit.convert(tmp_path / "decay.keras", "tflite,onnx", out_dir=tmp_path / "out", imports=imports)
    by_format = {r.format: r for r in results}
    assert by_format["tflite"].route["taken"] == "converter" and by_format["onnx"].route["taken"] == "tf2onnx"
    assert "Loop" not in {n.op_type for n in onnx.load(by_format["onnx"].path).graph.node}
    source = modelkit.load(tmp_path / "decay.keras", imports=imports)
    assert_artifacts_agree(results, source, "out", [(1, 2, 3), (3, 17, 3), (2, 40, 3)], rtol=1e-4, seed=1)
