"""keras -> tflite: fp32 parity of the trained digits CNN from two backends, every quantization mode
judged by its accuracy on the digits test split, name binding of the JAX-trained two-input model,
and the accuracy gate failing with no artifact left at the destination."""
import json
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.core.data import test_split
from modelkit.errors import AccuracyError, ConversionError, ShapeError

FP32_ATOL = 1e-4  # the edge's tolerance; measured ~2e-7 (TFLite folds BatchNorm into Conv)


def _manifest(path: Path) -> dict:
    return json.loads(path.with_name(path.name + ".modelkit.json").read_text())


@pytest.fixture(scope="module")
def tflite_fp32(tmp_path_factory, cnn_tf, cnn_torch) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("tflite")
    paths = {}
    for backend, src in (("tensorflow", cnn_tf), ("torch", cnn_torch)):
        (r,) = modelkit.convert(src, "tflite", out_dir=out / backend)
        paths[backend] = Path(r.path)
    return paths


@pytest.fixture(scope="module")
def quantized(tflite_fp32, cnn_tf) -> dict[str, Path]:
    """cnn_tf converted in each lossy mode, beside its fp32 artifact."""
    out = tflite_fp32["tensorflow"].parent
    return {mode: Path(modelkit.convert(cnn_tf, "tflite", out_dir=out, options={"quantize": mode})[0].path)
            for mode in ("fp16", "dynamic-int8", "int8")}


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_fp32_parity_of_trained_cnn_from_each_backend(tflite_fp32, cnn_tf, cnn_torch, backend):
    path = tflite_fp32[backend]
    m = _manifest(path)
    parity = m["parity"]
    assert parity["ok"] and parity["inputs"] == "digits test split (real samples)"
    assert [c["batch"] for c in parity["cases"]] == [1, 7] and parity["tolerance"]["atol"] == FP32_ATOL
    (probs,) = parity["outputs"]
    assert probs["name"] == "probs" and probs["max_abs"] <= FP32_ATOL and probs["argmax_agreement"] == 1.0
    assert probs["spread"] > 0.01  # the reference really varies: not a vacuous check
    assert m["format"] == "tflite" and m["quantization"] == "none" and "accuracy" not in m["extra"]
    assert m["chain"][0]["converter"] == "modelkit.converters.keras_tflite:keras_to_tflite"
    assert m["training"]["backend"] == backend
    # and directly, through the runtime API, at batch 1 and 7
    lite, keras_model = modelkit.load(path), modelkit.load(cnn_tf if backend == "tensorflow" else cnn_torch)
    assert lite.engine == "ai-edge-litert"
    inputs, _ = test_split("digits", "cnn")
    for batch in (1, 7):
        feed = {"image": inputs["image"][10:10 + batch]}
        np.testing.assert_allclose(lite.predict(feed)["probs"], keras_model.predict(feed)["probs"], atol=FP32_ATOL)


@pytest.mark.parametrize("mode, max_size_ratio, int_dtype", [
    ("fp16", 0.6, "float16"),  # weights halve; the graph itself stays
    ("dynamic-int8", 0.4, "int8"),
    ("int8", 0.4, "int8"),
])
def test_quantized_accuracy_and_size(quantized, tflite_fp32, mode, max_size_ratio, int_dtype):
    path = quantized[mode]
    assert path.name == f"cnn_tf.{mode}.tflite" and tflite_fp32["tensorflow"].is_file()  # both coexist
    m = _manifest(path)
    acc = m["extra"]["accuracy"]
    assert m["quantization"] == mode and acc["quantization"] == mode and acc["ok"]
    assert acc["data"] == "digits test split" and acc["samples"] == 360 and acc["output"] == "probs"
    assert acc["source_accuracy"] >= 0.9 and acc["drop"] <= 0.01 and acc["argmax_agreement"] >= 0.97
    assert m["parity"]["ok"]
    ratio = path.stat().st_size / tflite_fp32["tensorflow"].stat().st_size
    assert ratio < max_size_ratio, f"{mode}: {ratio:.3f} of the fp32 size"
    lite = modelkit.load(path)
    assert [s.dtype for s in lite.signature.inputs] == ["float32"]  # float interface kept, even for int8
    details = lite.interpreter.get_tensor_details()
    assert any(np.dtype(d["dtype"]).name == int_dtype for d in details)  # really quantized inside
    inputs, labels = test_split("digits", "cnn")
    measured = float((lite.predict(inputs)["probs"].argmax(-1) == labels).mean())
    assert measured == pytest.approx(acc["artifact_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_two_inputs_bound_by_name_trained_under_jax(multi_io_jax, tmp_path):
    (r,) = modelkit.convert(multi_io_jax, "tflite", out_dir=tmp_path)
    assert r.parity["ok"] and {o["name"] for o in r.parity["outputs"]} == {"probs", "intensity"}
    lite = modelkit.load(r.path)
    # TFLite orders its tensors alphabetically (features, image); the signature keeps the Keras order
    assert lite.signature.input_names == ["image", "features"]
    assert lite.signature.output_names == ["probs", "intensity"]
    assert lite.signature.inputs[0].shape == (None, 8, 8, 1) and lite.signature.inputs[1].shape == (None, 8)
    inputs, _ = test_split("digits", "multi_io")
    feed = {"features": inputs["features"][:9], "image": inputs["image"][:9]}  # insertion order irrelevant
    got, want = lite.predict(feed), modelkit.load(multi_io_jax).predict(feed)
    for name in ("probs", "intensity"):
        np.testing.assert_allclose(got[name], want[name], atol=FP32_ATOL)
    # swapping the arrays cannot silently run: the shapes no longer fit the names
    with pytest.raises(ShapeError, match="input 'image'"):
        lite.predict({"image": feed["features"], "features": feed["image"]})


def test_accuracy_gate_failure_leaves_no_artifact(cnn_tf, tmp_path):
    with pytest.raises(AccuracyError, match=r"drop .* > max_accuracy_drop -1") as info:
        modelkit.convert(cnn_tf, "tflite", out_dir=tmp_path,
                         options={"quantize": "dynamic-int8", "max_accuracy_drop": -1})
    assert not (tmp_path / "cnn_tf.dynamic-int8.tflite").exists()
    kept = tmp_path / "cnn_tf.dynamic-int8.parity-failed.tflite"
    assert kept.is_file() and info.value.report["ok"] is False
    acc = _manifest(kept)["extra"]["accuracy"]
    assert acc["ok"] is False and acc["max_accuracy_drop"] == -1 and acc["source_accuracy"] >= 0.9
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_lossy_hop_without_labelled_data_asks_for_eval_data(cnn_tf, tmp_path):
    bare = tmp_path / "bare.keras"
    bare.write_bytes(cnn_tf.read_bytes())  # no manifest: nothing says what it was trained on
    with pytest.raises(ConversionError, match="--eval-data"):
        modelkit.convert(bare, "tflite", out_dir=tmp_path, options={"quantize": "fp16"})
    assert not (tmp_path / "bare.fp16.tflite").exists()
    assert not list(tmp_path.glob("*.tflite"))


@pytest.mark.slow
def test_an_op_with_no_builtin_called_outside_any_layer_is_refused_in_one_line(tmp_path):
    """`ops.linalg.solve` on a functional model's tensors: the converter said "Could not translate MLIR to
    FlatBuffer.<unknown>:0: error: loc(callsite(fused[..." and ended "'tf.MatrixSolve' op is neither a custom op nor a
    flex op"; `ops.det` "TF Select ops: MatrixDeterminant", without the typed refusal a layer's op gets. (`ops.arcsin`
    and `ops.sinh`, the first cases, convert now: modelkit.converters._tf_elementwise.)"""
    from modelkit._backend import import_keras
    from modelkit.errors import UnsupportedConversionError

    keras = import_keras("tensorflow")
    ops = keras.ops

    def square(t):
        return ops.reshape(t, (-1, 2, 2)) + ops.eye(2) * 3

    solve = lambda t: ops.reshape(ops.linalg.solve(square(t), square(t * 2)), (-1, 4))  # noqa: E731
    det = lambda t: ops.expand_dims(ops.linalg.det(square(t)), -1)  # noqa: E731
    for name, op, tf_name in (("solve", solve, "MatrixSolve"), ("det", det, "MatrixDeterminant")):
        x = keras.Input((4,), name="x")
        keras.Model(x, keras.layers.Dense(2, name="out")(op(keras.ops.tanh(x) * 0.9))).save(tmp_path / f"{name}.keras")
        with pytest.raises(UnsupportedConversionError) as info:
            modelkit.convert(tmp_path / f"{name}.keras", "tflite", out_dir=tmp_path / name)
        assert str(info.value) == (
            f"the model cannot be converted to tflite: it runs TensorFlow op(s) {tf_name}, which are no TFLite builtin "
            "ops (they need Flex ops, which ai-edge-litert cannot run); the format that keeps every TensorFlow op: "
            "saved_model"), name
