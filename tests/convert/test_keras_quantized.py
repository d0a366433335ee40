"""nc151: models quantized by Keras itself (`model.quantize("int8")`, a layer's `quantize("int4")`) and a user's
straight-through rounding written with `keras.ops.custom_gradient` (quantization-aware training).

Found converting them with `--to all` (the same under every backend that saved them):
- tflite failed for int8: Keras' TF backend multiplies int8 by int8 into int32 (BatchMatMulV3), which the TFLite
  converter cannot lower ("'tfl.fully_connected' op operand #0 must be tensor of 32-bit float or QI8 type ...").
  The TFLite edge now traces such a model on its own with those products in float32 (the same integers below 2**24:
  _tf_lowering.float_int8_products); ONNX and the SavedModel keep the int8 products and weights.
- torchscript failed for int8 and int4 with an untyped RuntimeError at save ("Could not export Python function
  call 'CustomGradientFunction'"): Keras' torch custom_gradient is a torch.autograd.Function, which a trace records
  as a Python call. An export runs the forward function alone (_torch_export_ops._forward_only_gradients), and a
  trace torch.jit.save cannot store is a ConversionError.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import modelkit
from modelkit import _child
from tests.helpers.user_code import keras_beside

QAT = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="qat")
class RoundTo4Bits(keras.layers.Layer):
    """Fake quantization to 15 levels in [-1, 1] with a straight-through gradient."""
    def call(self, x):
        @ops.custom_gradient
        def fake_quant(v):
            def grad(*args, upstream=None):
                return args[-1] if upstream is None else upstream
            return ops.round(ops.clip(v, -1.0, 1.0) * 7.0) / 7.0, grad

        return fake_quant(x)
'''


def save(folder: str, backend: str) -> str:
    """Dense (quantized int8 by Keras) -> the user's 4-bit rounding -> EinsumDense (int8) -> Dense (int4)."""
    from pathlib import Path

    qat, keras = keras_beside(Path(folder), "qat", QAT, backend)
    x = keras.Input((12,), name="x")
    h = keras.layers.Dense(40, activation="tanh")(x)
    h = keras.layers.EinsumDense("bi,ij->bj", output_shape=24, bias_axes="j", activation="relu")(qat.RoundTo4Bits()(h))
    out = keras.layers.Dense(5, name="y")(h)
    model = keras.Model(x, out)
    model.quantize("int8", filters=lambda layer: layer.name != "y")
    model.get_layer("y").quantize("int4")
    path = Path(folder) / f"quantized_{backend}.keras"
    model.save(path)
    return str(path)


@pytest.mark.slow
def test_keras_quantized_models_reach_tflite_and_torchscript(tmp_path):
    src = _child.run("tests.convert.test_keras_quantized:save", {"folder": str(tmp_path), "backend": "torch"},
                     backend="torch", quiet=True)
    imports = [str(tmp_path / "qat.py")]
    results = {r.format: r for r in modelkit.convert(src, "tflite,torchscript,onnx", out_dir=tmp_path / "out",
                                                     imports=imports)}
    assert sorted(results) == ["onnx", "tflite", "torchscript"]
    x = np.random.default_rng(0).normal(size=(16, 12)).astype(np.float32)
    want = modelkit.load(src, imports=imports).predict(x)["y"]
    assert np.ptp(want) > 0.1  # the quantized layers answer something
    for fmt, r in results.items():
        assert r.parity["ok"], fmt
        np.testing.assert_allclose(modelkit.load(r.path).predict(x)["y"], want, atol=1e-5, err_msg=fmt)
    # the ONNX file keeps Keras' int8 weights and products (only TFLite's trace multiplies them in float32)
    graph = onnx.load(str(results["onnx"].path)).graph
    assert any(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer)
    assert "MatMulInteger" in {n.op_type for n in graph.node}


def save_tokens(path: str) -> str:
    """Token ids of any length -> Embedding -> mean -> Dense, quantized int8 by Keras (the table and the Dense)."""
    import keras

    keras.utils.set_random_seed(0)
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 16)(tokens))
    model = keras.Model(tokens, keras.layers.Dense(3, name="y")(h))
    model.quantize("int8")
    model.save(path)
    return path


@pytest.mark.slow
def test_a_keras_int8_embedding_reaches_executorch_at_one_token(tmp_path):
    """Keras' int8 Embedding takes its per-row scales with `ops.take` from a 1-D table; Keras' torch take squeezed the
    result of one id to a scalar, which the ExecuTorch runtime refused at one token (_take_unsqueezed)."""
    src = _child.run("tests.convert.test_keras_quantized:save_tokens", {"path": str(tmp_path / "tokens.keras")},
                     backend="jax", quiet=True)
    (result,) = modelkit.convert(src, "executorch", out_dir=tmp_path / "out")
    assert result.parity["ok"]
    artifact, keras_model = modelkit.load(result.path), modelkit.load(src)
    assert artifact.signature.inputs[0].shape[1] is None
    for batch, length in ((1, 1), (2, 1), (1, 9), (3, 4)):
        ids = np.random.default_rng(length).integers(0, 50, size=(batch, length)).astype(np.int32)
        np.testing.assert_allclose(artifact.predict(ids)["y"], keras_model.predict(ids)["y"], atol=1e-5,
                                   err_msg=f"{batch}x{length}")


def save_float8(folder: str) -> list[str]:
    """One MLP saved as it is (float.keras) and quantized "float8" by Keras (float8.keras): FP8 training's
    quantize-dequantize of inputs and kernels to float8_e4m3fn, here with the scales still 1."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((12,), name="x")
    model = keras.Model(x, keras.layers.Dense(3, name="y")(keras.layers.Dense(16, activation="relu")(x)))
    paths = [f"{folder}/float.keras", f"{folder}/float8.keras"]
    model.save(paths[0])
    model.quantize("float8")
    model.save(paths[1])
    return paths


@pytest.mark.slow
def test_a_keras_float8_model_reaches_onnx_tflite_openvino_and_torchscript(tmp_path):
    """onnxruntime refused the float8 type, the TFLite converter its casts; OpenVINO merged the name of the
    multiply by the scale 1 into the input's (_float8, onnx_openvino._onnx_names)."""
    plain, src = _child.run("tests.convert.test_keras_quantized:save_float8", {"folder": str(tmp_path)},
                            backend="tensorflow", quiet=True)
    results = modelkit.convert(src, "onnx,tflite,openvino,torchscript", out_dir=tmp_path / "out")
    assert sorted(r.format for r in results) == ["onnx", "openvino", "tflite", "torchscript"]
    x = np.random.default_rng(1).normal(size=(16, 12)).astype(np.float32) * 3
    want = modelkit.load(src).predict(x)["y"]
    assert np.abs(want - modelkit.load(plain).predict(x)["y"]).max() > 1e-3  # float8's rounding is in the numbers
    for r in results:
        artifact = modelkit.load(r.path)
        assert artifact.signature.input_names == ["x"], r.format
        np.testing.assert_allclose(artifact.predict(x)["y"], want, atol=1e-5, err_msg=r.format)


def test_float8_rounding_in_float32_is_the_cast_for_every_value():
    """Every float8 value, every midpoint between two (ties to even) and 20,000 values over the whole range."""
    import keras
    import ml_dtypes

    from modelkit.converters._float8 import FLOAT8, rounded_to_float8

    rng = np.random.default_rng(0)
    for name in FLOAT8:
        kind = getattr(ml_dtypes, name)
        top = float(ml_dtypes.finfo(kind).max)
        grid = np.arange(256, dtype=np.uint8).view(kind).astype(np.float32)
        grid = np.unique(grid[np.isfinite(grid)])
        spread = rng.uniform(-1, 1, 20_000) * 10.0 ** rng.uniform(-8, np.log10(top), 20_000)
        x = np.concatenate([grid, (grid[1:] + grid[:-1]) / 2, np.clip(spread, -top, top)]).astype(np.float32)
        got = keras.ops.convert_to_numpy(rounded_to_float8(keras.ops.convert_to_tensor(x), name))
        np.testing.assert_array_equal(got, x.astype(kind).astype(np.float32), err_msg=name)
