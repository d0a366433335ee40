"""Input names TensorFlow's signatures cannot carry (nc56: a click model fed from a table's columns, 'user-id',
'price ($)', 'hour.of.day'). TF renamed 'user-id' to 'user_id' behind the converter's back, so the SavedModel and
TFLite artifacts failed their check ("missing ['user_id'], unexpected ['user-id']"), and refused 'price ($)' beside
another input ("non-unique argument names"). The converter now names the signature by modelkit.spec.tf_input_names
and the engines map the names back by the manifest: every artifact takes the model's own names. And its output
layer 'click.prob' kept the model from loading under torch at all (torch refuses a '.' in a parameter's name)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import modelkit
from modelkit.spec import tf_input_names

NAMES = ("user-id", "price ($)", "hour.of.day")


def test_the_names_tf_keeps_are_unchanged_and_the_others_made_unique():
    assert tf_input_names(["image", "x_1"]) == {"image": "image", "x_1": "x_1"}
    assert tf_input_names(["user-id", "user_id", "a b", "3d", "é"]) == {
        "user-id": "user_id", "user_id": "user_id_2", "a b": "a_b", "3d": "input_3d", "é": "_"}


@pytest.fixture(scope="module")
def columns(tmp_path_factory):
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("columns")
    ins = {n: keras.Input((2,), name=n) for n in NAMES}
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()(list(ins.values())))
    keras.Model(ins, keras.layers.Dense(3, activation="softmax", name="click.prob")(h)).save(folder / "ctr.keras")
    rng = np.random.default_rng(0)
    feed = {n: rng.standard_normal((64, 2)).astype(np.float32) for n in NAMES}
    np.savez(folder / "calib.npz", **feed)
    probs = modelkit.load(folder / "ctr.keras").predict(feed)["click.prob"]
    np.savez(folder / "test.npz", y=probs.argmax(1), **feed)
    return folder, feed


def test_saved_model_and_tflite_take_the_model_s_own_names(columns):
    folder, feed = columns
    results = modelkit.convert(folder / "ctr.keras", "saved_model,tflite", out_dir=folder / "out")
    want = modelkit.load(folder / "ctr.keras").predict(feed)["click.prob"]
    for r in results:
        assert r.parity["ok"]
        model = modelkit.load(r.path)
        assert sorted(model.signature.input_names) == sorted(NAMES)
        np.testing.assert_allclose(model.predict(feed)["click.prob"], want, atol=1e-5)
        manifest = json.loads(open(f"{r.path}.modelkit.json").read())
        assert sorted(s["name"] for s in manifest["signature"]["inputs"]) == sorted(NAMES)


@pytest.mark.slow
def test_int8_tflite_calibrates_by_those_names(columns):
    folder, feed = columns
    (r,) = modelkit.convert(folder / "ctr.keras", "tflite", out_dir=folder / "out8", options={
        "quantize": "int8", "calibration_data": str(folder / "calib.npz"), "eval_data": str(folder / "test.npz"),
        "max_accuracy_drop": 0.2})
    assert r.accuracy["ok"] and modelkit.load(r.path).predict(feed)["click.prob"].shape == (64, 3)


def test_tf_serving_warm_up_uses_the_signature_s_keys(columns):
    from modelkit.serving.packagers.tf_serving import warmup_records

    folder, _ = columns
    sig = modelkit.load(folder / "ctr.keras").signature
    (record,) = warmup_records("ctr", sig)
    assert b"user_id" in record and b"price____" in record and b"user-id" not in record


@pytest.mark.slow
def test_a_weighted_layer_named_with_a_dot_loads_under_torch(columns):
    """The output layer 'click.prob' (a Dense): every torch-based format failed with "Keras could not load this model:
    KeyError: parameter name can't contain '.'" (modelkit._backend keys Keras' torch parameters with '__')."""
    folder, feed = columns
    (r,) = modelkit.convert(folder / "ctr.keras", "torchscript", out_dir=folder / "torch")
    want = modelkit.load(folder / "ctr.keras").predict(feed)["click.prob"]
    np.testing.assert_allclose(modelkit.load(r.path).predict(feed)["click.prob"], want, atol=1e-5)


def test_triton_s_config_names_the_saved_model_s_own_keys():
    from modelkit.formats import Format
    from modelkit.serving.packagers.triton import tensor_names
    from modelkit.spec import Signature, TensorSpec

    sig = Signature((TensorSpec("user-id", (None, 2), "float32"), TensorSpec("x", (None, 1), "float32")),
                    (TensorSpec("click.prob", (None, 3), "float32"),))
    assert tensor_names(sig, Format.SAVED_MODEL) == (["user_id", "x"], ["click.prob"])
    assert tensor_names(sig, Format.ONNX) == (["user-id", "x"], ["click.prob"])  # ONNX keeps the model's names


@pytest.mark.slow
def test_outputs_named_with_spaces_and_slashes_reach_saved_model_and_tflite(tmp_path):
    """nc147: a dict of outputs keyed 'class probs' and 'score/raw'. The TF signature named its Identity ops by the
    keys, and TF refused ("'class probs' is not a valid root scope name"): SavedModel and TFLite were not written. The
    ops are now named by tf_input_names; the outputs keep the model's own names."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    x = keras.Input((4,), name="pixel values")
    h = keras.layers.Dense(6, activation="relu")(x)
    outputs = {"class probs": keras.layers.Dense(2, activation="softmax")(h), "score/raw": keras.layers.Dense(1)(h)}
    keras.Model(x, outputs).save(tmp_path / "named.keras")
    feed = {"pixel values": np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)}
    want = modelkit.load(tmp_path / "named.keras").predict(feed)
    results = modelkit.convert(tmp_path / "named.keras", "saved_model,tflite", out_dir=tmp_path / "out")
    assert sorted(r.format for r in results) == ["saved_model", "tflite"]
    for r in results:
        model = modelkit.load(r.path)
        assert sorted(model.signature.output_names) == ["class probs", "score/raw"], r.format
        got = model.predict(feed)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=f"{r.format} '{name}'")
