"""A layer answering with several tensors (nc57: a recommender whose last layer returns the top-5 item ids and their
scores as a dict). Keras names each output after its layer, so both were 'top': tf2onnx wrote an invalid graph
("'top' has been used as output names multiple times"), torch.onnx refused ("Output names cannot be duplicated")
and `inspect` listed 'top' twice. A dict output is now named by its keys, other repeats by position."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit.keras_io.files import keras_signature
from tests.helpers.user_code import write_module

TOPK = '''import keras


@keras.saving.register_keras_serializable(package="rec")
class TopK(keras.layers.Layer):
    def call(self, scores):
        values, idx = keras.ops.top_k(scores, 3)
        return {"items": keras.ops.cast(idx, "int32"), "scores": values}


@keras.saving.register_keras_serializable(package="rec")
class Pair(keras.layers.Layer):
    def call(self, x):
        return x * 2.0, x + 1.0
'''


@pytest.mark.slow
def test_a_dict_answering_layer_s_outputs_are_named_by_its_keys_and_convert(tmp_path):
    from modelkit._backend import import_keras

    rec = write_module(tmp_path, "rec", TOPK)
    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    x = keras.Input((6,), name="user")
    scores = keras.layers.Dense(20, activation="softmax")(keras.layers.Dense(16, activation="relu")(x))
    keras.Model(x, rec.TopK(name="top")(scores)).save(tmp_path / "rec.keras")
    pair = keras.Model(x, list(rec.Pair(name="pair")(x)))
    assert keras_signature(pair).output_names == ["pair_0", "pair_1"]
    results = modelkit.convert(tmp_path / "rec.keras", "onnx,tflite", out_dir=tmp_path / "out",
                               imports=[str(tmp_path / "rec.py")])
    feed = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    want = modelkit.load(tmp_path / "rec.keras").predict(feed)
    assert sorted(want) == ["items", "scores"]
    for r in results:
        got = modelkit.load(r.path).predict(feed)
        assert got["items"].dtype == np.int32 and (got["items"] == want["items"]).all()
        np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-6)


@pytest.mark.slow
def test_a_dict_of_outputs_is_named_by_its_keys_not_its_layers(tmp_path):
    """nc94: a Siamese verifier answering `{"same": score, "embedding": encoder(left)}` named its second output after
    the sub-model that made it ('encoder', Keras' output_names), so `predict(...)["embedding"]` worked on the Keras
    model and failed on every artifact."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    img = keras.Input((5,))
    encoder = keras.Model(img, keras.layers.Dense(4)(img), name="encoder")
    left, right = keras.Input((5,), name="left"), keras.Input((5,), name="right")
    score = keras.layers.Dense(1, activation="sigmoid", name="head")(
        keras.layers.Concatenate()([encoder(left), encoder(right)]))
    model = keras.Model({"left": left, "right": right}, {"same": score, "embedding": encoder(left)})
    assert model.output_names == ["encoder", "head"]  # Keras' own: the layers
    assert keras_signature(model).output_names == ["embedding", "same"]
    model.save(tmp_path / "pair.keras")
    results = modelkit.convert(tmp_path / "pair.keras", "onnx,pt2", out_dir=tmp_path / "out")
    rng = np.random.default_rng(0)
    feed = {"left": rng.normal(size=(3, 5)).astype(np.float32), "right": rng.normal(size=(3, 5)).astype(np.float32)}
    want = model.predict(feed, verbose=0)
    for r in results:
        got = modelkit.load(r.path).predict(feed)
        assert sorted(got) == ["embedding", "same"], (r.format, sorted(got))
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=f"{r.format} {name}")
