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
