"""nc77: custom layers built on `keras.ops.scan` (a newcomer's moving average with a learned decay, trained under
JAX, and a two-state recurrence read from the end), over an open sequence length.

Found converting the moving-average model with `--to all`: only saved_model was written. tf2onnx wrote an invalid
graph ("No Op registered for TensorListReserve with domain_version of 17") and the TFLite converter refused it
("'tf.TensorListReserve' op requires element_shape to be static"): Keras' TF scan keeps its carry in a one-slot
TensorArray read and written at every step. The TF-based edges now trace scan as a while loop over plain tensors
(modelkit.converters._tf_scan). pt2 keeps it too, as torch's scan op (nc140, modelkit.converters._torch_scan);
TorchScript and the other torch formats keep the length only when it is fixed (Keras' torch scan is a Python
loop), which their refusal says.
"""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit import _child
from modelkit.errors import LoadError, UnsupportedConversionError
from tests.helpers.user_code import keras_beside

SCANS = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="scans")
class EMA(keras.layers.Layer):
    """A moving average over time with a learned decay per channel."""
    def build(self, shape):
        self.logit = self.add_weight(shape=(shape[-1],), initializer="random_normal", name="logit")

    def call(self, x):
        a = ops.sigmoid(self.logit)

        def step(carry, xt):
            c = a * carry + (1 - a) * xt
            return c, c

        _, ys = ops.scan(step, ops.zeros_like(x[:, 0, :]), ops.transpose(x, (1, 0, 2)))
        return ops.transpose(ys, (1, 0, 2))


@keras.saving.register_keras_serializable(package="scans")
class PeakAndSum(keras.layers.Layer):
    """Read from the end: a running max and a gated running sum (two states); per-step outputs of both."""
    def call(self, x):
        seq = ops.transpose(x, (1, 0, 2))

        def step(carry, xt):
            peak, total = carry
            peak = ops.maximum(peak, xt)
            total = total + xt * ops.sigmoid(0.5 * xt)
            return (peak, total), (peak, total)

        init = (ops.full_like(x[:, 0, :], -1e9), ops.zeros_like(x[:, 0, :]))
        (last_peak, _), (peaks, totals) = ops.scan(step, init, seq, reverse=True)
        steps = ops.transpose(ops.concatenate([peaks, totals], axis=-1), (1, 0, 2))
        return steps + ops.expand_dims(last_peak, 1)[..., :1]


@keras.saving.register_keras_serializable(package="scans")
class Elman(keras.layers.Layer):
    """A hand-written recurrence read from the end: its step reads the layer's weights; a tuple carry."""
    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], 5), initializer="glorot_uniform", name="w")
        self.u = self.add_weight(shape=(5, 5), initializer="orthogonal", name="u")

    def call(self, x):
        h0 = ops.zeros((ops.shape(x)[0], 5), dtype=x.dtype)

        def step(carry, xt):
            h, n = carry
            h = ops.tanh(ops.matmul(xt, self.w) + ops.matmul(h, self.u))
            return (h, n + 1.0), (h * 2.0, n)  # Keras' TF scan needs outputs shaped as the carry (keras 3.15.1)

        (h, n), (ys, _) = ops.scan(step, (h0, ops.zeros_like(h0)), ops.transpose(x, (1, 0, 2)), reverse=True)
        return ops.transpose(ys, (1, 0, 2)) + ops.expand_dims(h + n / 100.0, 1)


SEEN = []


@keras.saving.register_keras_serializable(package="scans")
class Noted(keras.layers.Layer):
    """A step with a side effect (it notes each step in a module's list): torch's scan cannot trace it."""
    def call(self, x):
        def step(carry, xt):
            SEEN.append(1)
            return carry + xt, carry + xt

        _, ys = ops.scan(step, ops.zeros_like(x[:, 0, :]), ops.transpose(x, (1, 0, 2)))
        return ops.transpose(ys, (1, 0, 2))


@keras.saving.register_keras_serializable(package="scans")
class Leaky(keras.layers.Layer):
    """A user's own recurrent cell (for keras.layers.RNN): a leaky tanh unit."""
    def __init__(self, units=5, **kwargs):
        super().__init__(**kwargs)
        self.units, self.state_size = units, units

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], self.units), initializer="glorot_uniform", name="w")
        self.u = self.add_weight(shape=(self.units, self.units), initializer="orthogonal", name="u")

    def call(self, x, states):
        h = 0.8 * ops.tanh(ops.matmul(x, self.w) + ops.matmul(states[0], self.u)) + 0.2 * states[0]
        return h, [h]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def Forward():  # noqa: N802 - named like the layers beside it, for save()
    return keras.layers.RNN(Leaky(5), return_sequences=True)


def Backward():  # noqa: N802
    return keras.layers.RNN(Leaky(4), return_sequences=True, go_backwards=True)


@keras.saving.register_keras_serializable(package="scans")
class RunningProduct(keras.layers.Layer):
    def call(self, x):
        return ops.associative_scan(lambda a, b: a * b, ops.sigmoid(x), axis=1)
'''


def save(folder: str, backend: str, layers: tuple[str, ...] = ("EMA", "PeakAndSum")) -> str:
    """The model saved under `backend` beside its scans.py (in a child for a backend other than this process's)."""
    from pathlib import Path

    tmp_path = Path(folder)
    scans, keras = keras_beside(tmp_path, "scans", SCANS, backend)
    series = keras.Input((None, 3), name="series")
    h = keras.layers.Dense(4)(series)
    h = keras.layers.Concatenate()([getattr(scans, name)()(h) for name in layers])
    out = keras.layers.Dense(2, name="y")(keras.layers.GlobalAveragePooling1D()(h))
    path = tmp_path / f"scan_{backend}.keras"
    keras.Model(series, out).save(path)
    return str(path)


def _model(tmp_path, backend: str, layers: tuple[str, ...] = ("EMA", "PeakAndSum")):
    if backend == "tensorflow":
        return save(str(tmp_path), backend, layers)
    kwargs = {"folder": str(tmp_path), "backend": backend, "layers": list(layers)}
    return _child.run("tests.convert.test_scan_layers:save", kwargs, backend=backend, quiet=True)


def _matches_at_every_length(result, keras_model) -> None:
    """The artifact keeps the length open and answers as the Keras model at lengths 1, 2, 7 and 40."""
    artifact = modelkit.load(result.path)
    assert artifact.signature.inputs[0].shape[1] is None
    for length in (1, 2, 7, 40):
        x = np.random.default_rng(length).normal(size=(3, length, 3)).astype(np.float32)
        np.testing.assert_allclose(artifact.predict(x)["y"], keras_model.predict(x)["y"], atol=1e-5,
                                   err_msg=f"{result.format} at length {length}")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_scan_layers_convert_to_onnx_and_tflite_at_any_length(tmp_path, backend):
    src = _model(tmp_path, backend)
    imports = [str(tmp_path / "scans.py")]
    results = modelkit.convert(src, "onnx,tflite", out_dir=tmp_path / "out", imports=imports)
    assert sorted(r.format for r in results) == ["onnx", "tflite"]
    keras_model = modelkit.load(src, imports=imports)
    for r in results:
        assert r.parity["ok"]
        _matches_at_every_length(r, keras_model)


@pytest.mark.slow
def test_scan_layers_reach_pt2_at_any_length(tmp_path):
    """nc140: under the torch backend Keras' scan is a Python loop, so torch.export fixed the length and pt2 was
    refused; the pt2 edge now runs a scan over an open length as torch's scan op (_torch_scan.py), the step reading
    the layer's weights (Elman) through copies made in the program."""
    src = _model(tmp_path, "jax", ("EMA", "PeakAndSum", "Elman"))
    imports = [str(tmp_path / "scans.py")]
    (result,) = modelkit.convert(src, "pt2", out_dir=tmp_path / "out", imports=imports)
    assert result.parity["ok"]
    _matches_at_every_length(result, modelkit.load(src, imports=imports))


@pytest.mark.slow
def test_recurrent_layers_of_a_users_cell_reach_pt2_at_any_length(tmp_path):
    """nc149: keras.layers.RNN of a user's own cell loops in Python under torch (Keras' backend.rnn), so pt2 was
    refused for an open length; its steps now run as torch's scan op, forward and backward (_torch_scan.py)."""
    src = _model(tmp_path, "jax", ("Forward", "Backward"))
    imports = [str(tmp_path / "scans.py")]
    (result,) = modelkit.convert(src, "pt2", out_dir=tmp_path / "out", imports=imports)
    assert result.parity["ok"]
    _matches_at_every_length(result, modelkit.load(src, imports=imports))


@pytest.mark.slow
def test_the_torch_formats_say_the_length_must_be_fixed(tmp_path):
    """TorchScript's trace keeps no scan; nor does pt2 where torch's scan cannot trace the step (a side effect)."""
    src = _model(tmp_path, "jax", ("EMA", "Noted"))
    imports = [str(tmp_path / "scans.py")]
    with pytest.raises(UnsupportedConversionError, match=r"layer 'ema' \(EMA\) turns it into the traced size"):
        modelkit.convert(src, "torchscript", out_dir=tmp_path / "out", imports=imports)
    with pytest.raises(UnsupportedConversionError, match=r"layer 'noted' \(Noted\) turns it into the traced size"):
        modelkit.convert(src, "pt2", out_dir=tmp_path / "out", imports=imports)


@pytest.mark.slow
def test_a_layer_that_fails_under_tensorflow_says_why_when_loaded(tmp_path):
    """Keras' TF associative_scan cannot take an open length (a Keras limitation); the model, saved under torch, fails
    to load for the TF-based formats. The error said only "Exception encountered when calling RunningProduct.call()";
    it now names the backend and the layer's own error."""
    src = _model(tmp_path, "torch", ("RunningProduct", "EMA"))
    with pytest.raises(LoadError, match=r"Keras could not load this model: Exception encountered when calling "
                                        r"RunningProduct.call\(\) under the tensorflow backend: as_list\(\) is not "
                                        r"defined on an unknown TensorShape\.$"):
        modelkit.load(src, imports=[str(tmp_path / "scans.py")])
