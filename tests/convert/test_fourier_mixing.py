"""nc164: FNet's token mixing, the real part of `keras.ops.fft2` over (tokens, features), in a user's layer over
any number of tokens.

Found converting a small FNet classifier with `--to all`: tf2onnx wrote a Complex op that does not exist (ONNX then
came from torch.onnx's DFT, which TVM's importer refuses), TFLite had no builtin for Complex / FFT2D, and ExecuTorch
does not lower aten.complex. Now the complex FFTs are products with the DFT's cosine and sine tables, computed from
a count of the axis when it is open (modelkit.converters._complex_dft), which TVM compiles at any count too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import _child
from tests.helpers.user_code import keras_beside

FNET = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fnet")
class FourierMix(keras.layers.Layer):
    def call(self, x):
        real, _ = ops.fft2((x, ops.zeros_like(x)))
        return real
'''


def save(folder: str) -> str:
    """tokens (any count, 8 features) -> Dense(16) -> FourierMix + residual -> LayerNorm -> mean -> Dense(3)."""
    fnet, keras = keras_beside(Path(folder), "fnet", FNET)
    x = keras.Input((None, 8), name="tokens")
    h = keras.layers.Dense(16)(x)
    h = keras.layers.LayerNormalization()(h + fnet.FourierMix()(h))
    out = keras.layers.Dense(3, name="scores")(keras.layers.GlobalAveragePooling1D()(h))
    keras.Model(x, out).save(Path(folder) / "fnet.keras")
    return str(Path(folder) / "fnet.keras")


def transforms_both_ways(seed: int) -> dict:
    """Keras' own fft, fft2 and ifft2 and modelkit's tables, in this child's backend, at known sizes and (under
    TensorFlow) over an open axis; the largest difference relative to the output's largest magnitude."""
    import keras

    from modelkit.converters._complex_dft import dft_ops

    own = {k: getattr(keras.src.backend.math, k) for k in ("fft", "fft2", "ifft2")}
    mine = dft_ops(own["fft"], own["fft2"], own["ifft2"])
    rng = np.random.default_rng(seed)
    worst = 0.0

    def compare(name: str, pair: tuple, got: tuple) -> None:
        nonlocal worst
        want = [keras.ops.convert_to_numpy(v) for v in own[name](pair)]
        got = [keras.ops.convert_to_numpy(v) for v in got]
        scale = max(float(np.abs(w).max()) for w in want)
        worst = max(worst, *(float(np.abs(w - g).max()) / scale for w, g in zip(want, got)))

    for shape in [(2, 7, 5), (3, 16, 12), (1, 1, 4), (2, 3, 9, 6)]:
        pair = tuple(rng.standard_normal(shape).astype(np.float32) for _ in range(2))
        for name in own:
            compare(name, pair, mine[name](pair))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        for name in own:
            traced = tf.function(lambda r, i, name=name: mine[name]((r, i)),
                                 input_signature=[tf.TensorSpec([None, None, 12])] * 2)
            for tokens in (1, 5, 40):
                pair = tuple(rng.standard_normal((2, tokens, 12)).astype(np.float32) for _ in range(2))
                compare(name, pair, traced(*pair))
    return {"worst": worst}


@pytest.mark.slow
def test_the_tables_compute_keras_own_transforms():
    for backend in ("tensorflow", "torch"):
        got = _child.run("tests.convert.test_fourier_mixing:transforms_both_ways", {"seed": 2}, backend=backend,
                         quiet=True)
        assert got["worst"] < 1e-5, backend


@pytest.mark.slow
def test_fourier_mixing_converts_to_onnx_tflite_executorch_and_tvm_at_any_token_count(tmp_path):
    src = _child.run("tests.convert.test_fourier_mixing:save", {"folder": str(tmp_path)}, backend="tensorflow",
                     quiet=True)
    results = modelkit.convert(src, to="onnx,tflite,executorch,tvm", out_dir=tmp_path / "out",
                               imports=[str(tmp_path / "fnet.py")])
    assert sorted(r.format for r in results) == ["executorch", "onnx", "tflite", "tvm"]
    for r in results:
        assert r.parity["ok"] and r.max_abs < 1e-4, (r.format, r.parity["outputs"])
        assert r.parity["dynamic_dims"]["tokens"]["1"]["dynamic"], r.format
    feed = np.random.default_rng(1).standard_normal((2, 29, 8)).astype(np.float32)  # a count no check used
    want = modelkit.load(src, imports=[str(tmp_path / "fnet.py")]).predict(feed)["scores"]
    for r in results:
        np.testing.assert_allclose(modelkit.load(r.path).predict(feed)["scores"], want, atol=1e-4)
