"""nc156: layers whose computation belongs to one framework.

- A TorchModuleWrapper holds a torch.nn.Module, which only Keras' torch backend runs. Converting one with `--to all`
  failed for five formats with "Keras could not load this model: RuntimeError: Can't call numpy() on Tensor that
  requires grad" (the TensorFlow load), although torch.onnx makes its ONNX (and so TVM and OpenVINO). Now tf2onnx,
  the SavedModel and TFLite refuse it by the support tables, ONNX takes the torch route, and `modelkit.load` loads
  it under torch when Keras is not imported yet (a clear LoadError when Keras runs another backend).
- A JaxLayer runs a JAX function: under JAX, and under TensorFlow through jax2tf as one XlaCallModule op, which the
  SavedModel and TFLite take and tf2onnx does not. The other formats failed with Keras' or tf2onnx's errors
  ("Could not infer the attribute type ..."); they are now refused before any work, naming the layer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import _child
from modelkit.errors import LoadError, UnsupportedConversionError
from tests.helpers.user_code import keras_beside

JAX_FUNCTIONS = '''import jax
import jax.numpy as jnp
import keras


@keras.saving.register_keras_serializable(package="jaxfns")
def mlp_call(params, inputs):
    return jnp.tanh(inputs @ params["w1"] + params["b1"]) @ params["w2"]


@keras.saving.register_keras_serializable(package="jaxfns")
def mlp_init(rng, inputs):
    k1, k2 = jax.random.split(rng)
    return {"w1": jax.random.normal(k1, (inputs.shape[-1], 16)) * 0.5, "b1": jnp.zeros((16,)),
            "w2": jax.random.normal(k2, (16, 4)) * 0.5}
'''


def save_torch_wrapped(folder: str) -> str:
    """x (12) -> TorchModuleWrapper(Linear, GELU, LayerNorm) -> Dense(3), saved under torch."""
    import keras
    import torch

    keras.utils.set_random_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.GELU(), torch.nn.LayerNorm(16))
    x = keras.Input((12,), name="x")
    h = keras.layers.TorchModuleWrapper(module, output_shape=(None, 16), name="torch_block")(x)
    model = keras.Model(x, keras.layers.Dense(3, name="y")(h))
    path = Path(folder) / "wrapped.keras"
    model.save(path)
    return str(path)


def save_jax_layer(folder: str) -> str:
    """x (10) -> JaxLayer(the user's registered JAX functions) -> Dense(2), saved under JAX."""
    fns, keras = keras_beside(Path(folder), "jaxfns", JAX_FUNCTIONS, "jax")
    x = keras.Input((10,), name="x")
    h = keras.layers.JaxLayer(fns.mlp_call, init_fn=fns.mlp_init, name="jax_block")(x)
    model = keras.Model(x, keras.layers.Dense(2, name="y")(h))
    path = Path(folder) / "jax_layer.keras"
    model.save(path)
    return str(path)


def loaded_under_tensorflow(path: str) -> str:
    """The LoadError of loading `path` in a process whose Keras runs TensorFlow."""
    import modelkit
    from modelkit._backend import import_keras

    import_keras("tensorflow")
    with pytest.raises(LoadError) as info:
        modelkit.load(path, trust_unsafe_code=True)
    return str(info.value)


def predicted(path: str) -> dict:
    """(engine, output) of modelkit.load in a fresh process that has not imported Keras."""
    import modelkit

    model = modelkit.load(path, trust_unsafe_code=True)
    y = model.predict(np.linspace(-2, 2, 24, dtype="float32").reshape(2, 12))["y"]
    return {"engine": model.engine, "y": y.tolist()}


@pytest.mark.slow
def test_torch_module_wrapper_converts_by_torch_and_is_refused_by_tensorflow_formats(tmp_path):
    src = _child.run("tests.convert.test_backend_bound:save_torch_wrapped", {"folder": str(tmp_path)},
                     backend="torch", quiet=True)
    with pytest.raises(UnsupportedConversionError) as info:
        modelkit.convert(src, to=["onnx", "torchscript", "saved_model", "tflite"], out_dir=tmp_path / "out",
                         trust_unsafe_code=True)
    done = {r.format: r for r in info.value.results}
    assert sorted(done) == ["onnx", "torchscript"]
    assert done["onnx"].route["taken"] == "torch" and done["onnx"].max_abs < 1e-4
    assert "TorchModuleWrapper" in done["onnx"].route["tried"][0]["error"]
    assert sorted(info.value.failures) == ["saved_model", "tflite"]
    for why in info.value.failures.values():
        assert "layer 'torch_block' (TorchModuleWrapper)" in why and "only under Keras' torch backend" in why
        assert "formats that take it: onnx, torchscript, pt2, executorch, tvm, openvino" in why
    assert not list((tmp_path / "out").glob("*saved_model*")) and not list((tmp_path / "out").glob("*.tflite"))

    # the runtime picks torch in a fresh process; a process whose Keras runs TensorFlow says how to load it
    fresh = _child.run("tests.convert.test_backend_bound:predicted", {"path": src}, quiet=True)
    onnx_y = modelkit.load(done["onnx"].path).predict(np.linspace(-2, 2, 24, dtype="float32").reshape(2, 12))["y"]
    assert fresh["engine"] == "keras/torch"
    np.testing.assert_allclose(fresh["y"], onnx_y, atol=1e-5)
    assert np.ptp(onnx_y) > 0.1
    why = _child.run("tests.convert.test_backend_bound:loaded_under_tensorflow", {"path": src}, quiet=True)
    assert "layer 'torch_block' (TorchModuleWrapper) holds a torch.nn.Module" in why
    assert "Keras runs tensorflow in this process: load it with backend='torch'" in why


@pytest.mark.slow
def test_jax_layer_reaches_tensorflow_formats_and_is_refused_by_the_others(tmp_path):
    src = _child.run("tests.convert.test_backend_bound:save_jax_layer", {"folder": str(tmp_path)},
                     backend="jax", quiet=True)
    imports = [str(tmp_path / "jaxfns.py")]
    (r,) = modelkit.convert(src, to="tflite", out_dir=tmp_path / "out", imports=imports)
    assert r.max_abs < 1e-4 and r.parity["outputs"][0]["spread"] > 1e-2
    for fmt, reason in [("onnx", "tf2onnx cannot convert an XlaCallModule op and torch cannot run it"),
                        ("torchscript", "torch cannot run it"), ("tvm", "TVM compiles the ONNX model")]:
        with pytest.raises(UnsupportedConversionError) as info:
            modelkit.convert(src, to=fmt, out_dir=tmp_path / "out", imports=imports)
        assert f"layer 'jax_block' (JaxLayer) cannot be converted to {fmt}" in str(info.value)
        assert reason in str(info.value) and "formats that take it: saved_model, tflite" in str(info.value)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["jax_layer.tflite",
                                                                    "jax_layer.tflite.modelkit.json"]
