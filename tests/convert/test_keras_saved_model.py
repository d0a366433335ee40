"""keras -> saved_model: serving_default signature with Keras names, parity on trained models."""
import json

import numpy as np
import pytest

import modelkit
from modelkit.errors import ShapeError


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_parity_of_trained_cnn_from_each_backend(converted, backend):
    path = converted[backend]["saved_model"]
    assert (path / "saved_model.pb").is_file()
    m = json.loads(path.with_name(path.name + ".modelkit.json").read_text())
    assert m["format"] == "saved_model" and m["parity"]["ok"]
    assert m["parity"]["outputs"][0]["max_abs"] <= 1e-5
    assert m["source"]["sha256"] and m["chain"][-1]["target"] == "saved_model"


def test_serving_default_signature_and_dynamic_batch(converted):
    import tensorflow as tf

    path = converted["torch"]["saved_model"]
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert list(fn.structured_input_signature[1]) == ["image"]
    assert list(fn.structured_outputs) == ["probs"]
    m = modelkit.load(path)
    for batch in (1, 5, 64):
        assert m.predict(np.random.rand(batch, 8, 8, 1).astype(np.float32))["probs"].shape == (batch, 10)


def test_mis_shaped_input_is_stopped_before_tensorflow(converted):
    m = modelkit.load(converted["tensorflow"]["saved_model"])
    with pytest.raises(ShapeError, match=r"dimension 2 must be 8"):
        m.predict(np.zeros((1, 8, 9, 1), np.float32))


def test_each_weight_is_stored_once(tmp_path):
    """Keras' ExportArchive saved every weight twice (its Keras variable and the TF variable the signature
    captures): ConvNeXtTiny's SavedModel held 213.9 MB of variables for 106.4 MB of weights (nc25). Each is
    stored once now, and Keras can still load the folder as a layer with its weights."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((500,), name="x"), keras.layers.Dense(500, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(4, name="y")])
    model.save(tmp_path / "wide.keras")
    (r,) = modelkit.convert(tmp_path / "wide.keras", "saved_model", out_dir=tmp_path)
    weights = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    stored = sum(p.stat().st_size for p in (tmp_path / "wide_saved_model" / "variables").glob("variables.data-*"))
    assert weights <= stored < 1.05 * weights and r.parity["ok"]
    layer = keras.layers.TFSMLayer(str(tmp_path / "wide_saved_model"), call_endpoint="serving_default")
    x = np.random.default_rng(0).random((3, 500), dtype=np.float32)
    assert len(layer.weights) == len(model.weights)
    np.testing.assert_allclose(layer(x)["y"], model.predict(x, verbose=0), atol=1e-5)
