"""IntegerLookup traced as comparisons with its vocabulary (modelkit/converters/_lookup.py): a structured-data
model with categorical ids converted to SavedModel only, its TF hash table (LookupTableFindV2) being no ONNX op,
no TFLite builtin and nothing torch can trace (nc129, a diabetes risk model). Each output mode and OOV scheme is
checked against Keras on ids in and out of the vocabulary, negative ones included; the SavedModel keeps no
table, so TFLite converts it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.converters._lookup import lowerable


@pytest.fixture(scope="module")
def lookups(tmp_path_factory):
    """Five IntegerLookups side by side: one_hot of a given vocabulary; multi_hot with two OOV buckets (ids mod 2);
    tf_idf; count of an adapted vocabulary; int ids with a mask token into a masked Embedding."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    L = keras.layers
    keras.utils.set_random_seed(0)
    color = keras.Input((1,), dtype="int64", name="color")
    tags = keras.Input((3,), dtype="int64", name="tags")
    codes = keras.Input((4,), dtype="int32", name="codes")
    count = L.IntegerLookup(output_mode="count", name="tag_count")
    count.adapt(np.array([[5, 6, 6, 9, 9, 9, 12]]))
    code_ids = L.IntegerLookup(mask_token=0, name="code_lookup")
    code_ids.adapt(np.array([[101, 202, 303, 101, 404]]))
    parts = [L.IntegerLookup(vocabulary=[3, 7, 11, 19], output_mode="one_hot", name="color_lookup")(color),
             L.IntegerLookup(vocabulary=[5, 6, 9], num_oov_indices=2, output_mode="multi_hot", name="tag_hot")(tags),
             L.IntegerLookup(vocabulary=[5, 6, 9], output_mode="tf_idf", idf_weights=[1.0, 2.0, 3.0],
                             name="tag_idf")(tags),
             count(tags)]
    parts = [keras.ops.cast(p, "float32") for p in parts]
    parts.append(L.GlobalAveragePooling1D()(L.Embedding(8, 3, mask_zero=True)(code_ids(codes))))
    model = keras.Model({"color": color, "tags": tags, "codes": codes},
                        L.Dense(2, name="score")(L.Concatenate()(parts)))
    folder = tmp_path_factory.mktemp("lookups")
    model.save(folder / "lookups.keras")
    return folder / "lookups.keras", model


@pytest.mark.slow
def test_every_output_mode_converts_by_each_backend_and_matches_keras_on_unknown_ids(lookups, tmp_path):
    src, model = lookups
    results = {r.format: r for r in modelkit.convert(src, "onnx,tflite,saved_model,pt2", out_dir=tmp_path)}
    assert results["onnx"].route["taken"] == "tf2onnx"  # the TF trace itself, not the torch route's
    assert "'tags' in one of [5, 6, 9, 10, -10, ...] (IntegerLookup 'tag_hot': its vocabulary, and unknown ids " \
           "10, -10, -11)" in results["onnx"].parity["inputs"]
    pool = np.array([3, 7, 11, 19, 0, -1, 5, 6, 9, 12, 101, 202, 303, 404, 8, -7, -10, 2**40])
    rng = np.random.default_rng(1)
    feed = {"color": rng.choice(pool, (16, 1)), "tags": rng.choice(pool, (16, 3)),
            "codes": rng.choice(pool[pool < 2**31], (16, 4)).astype(np.int32)}
    want = model.predict(feed, verbose=0)
    for fmt, r in results.items():
        np.testing.assert_allclose(modelkit.load(r.path).predict(feed)["score"], want, atol=1e-5, err_msg=fmt)
    saved = (Path(results["saved_model"].path) / "saved_model.pb").read_bytes()
    assert b"LookupTable" not in saved and b"HashTable" not in saved  # nor an adapted layer's counts


@pytest.mark.parametrize("config, takes", [
    ({}, True),
    ({"output_mode": "one_hot"}, True),
    ({"num_oov_indices": 3}, True),
    ({"mask_token": 0, "output_mode": "int"}, True),
    ({"invert": True}, False),
    ({"num_oov_indices": 0}, False),
    ({"num_oov_indices": 2, "oov_method": "farmhash"}, False),
    ({"mask_token": 0, "output_mode": "multi_hot"}, False),
    ({"sparse": True}, False),
])
def test_which_lookups_are_traced_as_comparisons(config, takes):
    assert lowerable(config) is takes


@pytest.mark.slow
def test_executorch_int8_of_lookup_rows_concatenated_with_features(tmp_path):
    """IntegerLookup's one-hot rows are int64 (as Keras makes them); concatenated with float features, ExecuTorch's
    edge dialect refused the cat of mixed dtypes, float32 and int8 alike (and the quantizer observed the int64 rows:
    '"histogram_cpu" not implemented for 'Long''); each input is now cast to the cat's dtype first."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    L = keras.layers
    keras.utils.set_random_seed(4)
    rng = np.random.default_rng(4)
    ids = rng.choice([1, 2, 3], (600, 1))
    x = rng.normal(size=(600, 6)).astype(np.float32)
    x[:, 0] += np.sign(x[:, 0]) * 0.5  # a margin at the boundary: int8's rounding flips no answer
    y = ((ids[:, 0] == 2) ^ (x[:, 0] > 0)).astype(np.int32)
    kind, feats = keras.Input((1,), dtype="int64", name="kind"), keras.Input((6,), name="feats")
    h = L.Concatenate()([L.IntegerLookup(vocabulary=[1, 2, 3], output_mode="one_hot")(kind), feats])
    model = keras.Model({"kind": kind, "feats": feats},
                        L.Dense(2, activation="softmax", name="p")(L.Dense(24, activation="relu")(h)))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit({"kind": ids[:400], "feats": x[:400]}, y[:400], epochs=40, verbose=0)
    model.save(tmp_path / "mixed.keras")
    np.savez(tmp_path / "calib.npz", kind=ids[:200], feats=x[:200])
    np.savez(tmp_path / "eval.npz", kind=ids[400:], feats=x[400:], y=y[400:])
    (r,) = modelkit.convert(tmp_path / "mixed.keras", "executorch", out_dir=tmp_path, quantize="int8",
                            calibration_data=str(tmp_path / "calib.npz"), eval_data=str(tmp_path / "eval.npz"))
    assert r.accuracy["ok"] and r.accuracy["source_accuracy"] > 0.9 and r.accuracy["drop"] <= 0.01, r.accuracy
    assert r.max_abs > 1e-5  # int8, not the float program
