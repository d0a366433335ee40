"""nc87: a small vision transformer (JAX) whose token-shift layer rolls half the channels one token along
(`keras.ops.roll`). Every format converted but TFLite: TensorFlow writes the roll as Roll, which has no TFLite builtin.
It is traced as slices and a concat (a gather over an open axis; modelkit.converters._tf_lowering.roll_by_slices)."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from tests.helpers.cells import assert_artifacts_agree
from tests.helpers.user_code import keras_beside

SHIFT = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="shift")
class TokenShift(keras.layers.Layer):
    """Half the channels one step along time (any length), the rest rolled back two channels."""
    def call(self, x):
        d = x.shape[-1] // 2
        return ops.concatenate([ops.roll(x[..., :d], 1, axis=1), ops.roll(x[..., d:], -2, axis=-1)], axis=-1)
'''


@pytest.mark.parametrize("shift, axis, shape", [
    (1, 1, (2, 5, 4)), (-3, -1, (2, 5, 4)), (7, 1, (2, 5, 4)), (0, 1, (2, 5, 4)), ((1, -2), (0, 2), (3, 4, 5)),
    (2, (1, 2), (2, 3, 4)), (3, None, (2, 3, 4))])
def test_rolling_by_slices_is_np_roll_over_known_and_open_axes(shift, axis, shape):
    import tensorflow as tf

    from modelkit.converters._tf_lowering import roll_by_slices

    def refused(*args, **kwargs):
        raise AssertionError("a roll by whole numbers is sliced, not passed on")

    roll = roll_by_slices(refused)
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    want = np.roll(x, shift, axis)
    np.testing.assert_array_equal(roll(x, shift, axis).numpy(), want)
    traced = tf.function(lambda t: roll(t, shift, axis), input_signature=[tf.TensorSpec([None] * len(shape))])
    graph = traced.get_concrete_function().graph
    assert "Roll" not in {op.type for op in graph.get_operations()}
    np.testing.assert_array_equal(traced(x).numpy(), want)  # every axis open: the gather


def test_a_shift_held_in_a_tensor_stays_tfs_roll():
    import tensorflow as tf

    from modelkit.converters._tf_lowering import roll_by_slices

    seen = []
    roll = roll_by_slices(lambda x, shift, axis: seen.append(shift) or tf.roll(x, shift, axis))
    np.testing.assert_array_equal(roll(np.arange(4.0), tf.constant(1), 0).numpy(), [3.0, 0.0, 1.0, 2.0])
    assert len(seen) == 1


@pytest.mark.slow
def test_a_token_shift_layer_converts_to_tflite_and_onnx_at_any_length(tmp_path):
    shift, keras = keras_beside(tmp_path, "shift", SHIFT)
    x = keras.Input((None, 6), name="tokens")
    h = shift.TokenShift()(keras.layers.Dense(6)(x))
    keras.Model(x, keras.layers.Dense(3, name="out")(h)).save(tmp_path / "shift.keras")
    imports = [str(tmp_path / "shift.py")]
    results = modelkit.convert(tmp_path / "shift.keras", "tflite,onnx", out_dir=tmp_path / "out", imports=imports)
    assert {r.format: r.route["taken"] for r in results} == {"tflite": "converter", "onnx": "tf2onnx"}
    source = modelkit.load(tmp_path / "shift.keras", imports=imports)
    assert_artifacts_agree(results, source, "out", [(1, 3, 6), (4, 9, 6), (2, 1, 6)])
