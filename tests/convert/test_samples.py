"""Verification inputs that fit the model (modelkit.converters.samples): ranges read from the layers that
say what a model expects, generation within them, and the checks on user samples. In-process, fast."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit.converters.samples import Range, check_samples, generate, infer_ranges, plan_inputs
from modelkit.converters.verify import make_inputs
from modelkit.errors import InputNameError, ShapeError
from modelkit.spec import Signature, TensorSpec


@pytest.fixture(scope="module")
def keras():
    from modelkit._backend import import_keras

    return import_keras("tensorflow")


def _ranges(keras, inputs, outputs):
    model = keras.Model(inputs, outputs)
    return infer_ranges(model, [t.name for t in model.inputs])


def test_rescaling_gives_the_raw_pixel_range(keras):
    x = keras.Input((8, 8, 3), name="image")  # MobileNetV3's include_preprocessing: x / 127.5 - 1
    (r,) = _ranges(keras, x, keras.layers.Dense(2)(keras.layers.Rescaling(1 / 127.5, offset=-1.0)(x))).values()
    assert (r.low, r.high) == pytest.approx((0.0, 255.0))
    y = keras.Input((8, 8, 3), name="image")  # EfficientNet's: x / 255, through a value-preserving crop
    h = keras.layers.Rescaling(1 / 255.0, name="rescale")(keras.layers.CenterCrop(4, 4)(y))
    (r,) = _ranges(keras, y, keras.layers.Dense(2)(h)).values()
    assert (r.low, r.high) == pytest.approx((0.0, 255.0))
    assert r.describe().startswith("[0, 255) (Rescaling 'rescale': x * 0.003922 + 0 lands in [0, 1])")
    z = keras.Input((3,), name="z")  # scaling up: the raw values are already small, nothing inferred
    assert _ranges(keras, z, keras.layers.Rescaling(255.0)(z)) == {}


def test_a_nested_model_is_followed_to_its_first_layer(keras):
    inner = keras.Sequential([keras.Input((4, 4, 3), name="inner_in"), keras.layers.Rescaling(1 / 255.0),
                              keras.layers.Flatten(), keras.layers.Dense(3)], name="backbone")
    x = keras.Input((4, 4, 3), name="pixels")
    ranges = _ranges(keras, x, keras.layers.Dense(2)(inner(x)))
    assert list(ranges) == ["pixels"] and (ranges["pixels"].low, ranges["pixels"].high) == pytest.approx((0, 255))


def test_normalization_ranges_per_feature_from_adapted_and_given_statistics(keras):
    rng = np.random.default_rng(0)
    x = keras.Input((3,), name="x")
    norm = keras.layers.Normalization()
    data = np.stack([rng.normal(100, 10, 500), rng.normal(-5, 1, 500), rng.normal(0, 0.1, 500)], 1)
    norm.adapt(data.astype("float32"))
    r = _ranges(keras, x, keras.layers.Dense(1)(norm(x)))["x"]
    np.testing.assert_allclose(r.low, [80, -7, -0.2], atol=0.6)
    np.testing.assert_allclose(r.high, [120, -3, 0.2], atol=0.6)
    given = keras.Input((2,), name="g")
    r = _ranges(keras, given, keras.layers.Normalization(mean=[1.0, 2.0], variance=[4.0, 4.0])(given))["g"]
    assert (r.low, r.high) == ([-3.0, -2.0], [5.0, 6.0])


def test_integer_inputs_get_valid_ids_and_vocabulary_values(keras):
    ids = keras.Input((5,), dtype="int32", name="ids")
    assert _ranges(keras, ids, keras.layers.Embedding(50, 4)(ids))["ids"].high == 50
    lookup = keras.layers.IntegerLookup()
    lookup.adapt(np.array([[7, 7, 13, 500]]))
    tokens = keras.Input((2,), dtype="int64", name="tokens")
    # the vocabulary, and ids outside it (one above, two consecutive negative ones: OOV buckets are computed)
    assert sorted(_ranges(keras, tokens, lookup(tokens))["tokens"].values) == [-502, -501, 7, 13, 500, 501]
    no_oov = keras.layers.IntegerLookup(vocabulary=[7, 13, 500], num_oov_indices=0)  # unknown ids are errors there
    assert sorted(_ranges(keras, tokens, no_oov(tokens))["tokens"].values) == [7, 13, 500]
    cats = keras.Input((1,), dtype="int32", name="cats")
    assert _ranges(keras, cats, keras.layers.CategoryEncoding(30, output_mode="one_hot")(cats))["cats"].high == 30
    f = keras.Input((2,), name="f")
    r = _ranges(keras, f, keras.layers.Discretization(bin_boundaries=[0.0, 1.0, 2.0])(f))["f"]
    assert (r.low, r.high) == (-1.0, 3.0)


def test_generation_stays_within_the_range_and_is_seeded():
    spec = TensorSpec("ids", (None, 5), "int32")
    a = generate(spec, (64, 5), np.random.default_rng(3), Range(0, 50))
    assert a.dtype == np.int32 and a.min() >= 0 and a.max() < 50 and a.max() >= 10  # not the default [0, 10)
    np.testing.assert_array_equal(a, generate(spec, (64, 5), np.random.default_rng(3), Range(0, 50)))
    v = generate(TensorSpec("t", (None, 2), "int64"), (40, 2), np.random.default_rng(0), Range(values=[7, 13, 500]))
    assert set(np.unique(v)) == {7, 13, 500}
    per = generate(TensorSpec("x", (None, 2)), (200, 2), np.random.default_rng(0), Range([0.0, 100.0], [1.0, 200.0]))
    assert per.dtype == np.float32 and per[:, 0].max() < 1 and per[:, 1].min() >= 100 and per[:, 1].max() < 200
    sig = Signature((spec,))
    feed = make_inputs(sig, 7, None, seed=0, ranges={"ids": Range(0, 50)})
    assert feed["ids"].shape == (7, 5) and feed["ids"].max() < 50


def test_user_samples_are_checked_against_the_inputs():
    sig = Signature((TensorSpec("image", (None, 4, 4, 1)), TensorSpec("meta", (None, 2))))
    good = {"image": np.zeros((3, 4, 4, 1), np.float32), "meta": np.zeros((3, 2), np.float32)}
    assert sorted(check_samples(good, sig, "s.npz")) == ["image", "meta"]
    with pytest.raises(InputNameError) as info:
        check_samples({**good, "imgae": np.zeros(3)}, sig, "s.npz")
    assert str(info.value) == ("s.npz: keys ['imgae'] match no input; the model's inputs are ['image', 'meta'], "
                               "or np.savez's arr_0 to arr_1 in that order")
    assert sorted(check_samples({**good, "y": np.zeros(3)}, sig, "s.npz")) == ["image", "meta"]  # labels
    with pytest.raises(InputNameError, match=r"inputs \['meta'\] have no samples"):
        check_samples({"image": good["image"]}, sig, "s.npz")
    with pytest.raises(ShapeError, match=r"samples of 'image' have shape \(3, 5, 4, 1\); the input takes "
                                         r"\(\?, 4, 4, 1\)"):
        check_samples({**good, "image": np.zeros((3, 5, 4, 1))}, sig, "s.npz")
    with pytest.raises(ShapeError, match="'meta' has 2 samples, other inputs 3"):
        check_samples({**good, "meta": np.zeros((2, 2))}, sig, "s.npz")
    one = Signature((TensorSpec("pixels", (None, 3)),))  # a one-input model also takes key 'x'
    assert list(check_samples({"x": np.ones((2, 3))}, one, "s.npz")) == ["pixels"]
    # a training .npz (modelkit train --data): x is the input, the labels are not; x_test when x is absent
    train = {"x": np.ones((2, 3)), "y": np.zeros(2), "x_test": np.zeros((4, 3)), "y_test": np.zeros(4)}
    assert check_samples(train, one, "t.npz")["pixels"].shape == (2, 3)
    assert check_samples({"x_test": np.zeros((4, 3)), "y_test": np.zeros(4)}, one, "t.npz")["pixels"].shape == (4, 3)
    with pytest.raises(InputNameError, match=r"keys \['foo'\] match no input; inputs \['pixels'\] have no samples"):
        check_samples({"foo": np.ones((2, 3))}, one, "junk.npz")


def test_np_savez_positional_arrays_are_the_inputs_in_order():
    """`np.savez("test.npz", x)` names its array arr_0 (nc64: a keyword model's test waveforms): that is the
    input of a one-input model; arr_0, arr_1 are a two-input model's inputs in its order."""
    one = Signature((TensorSpec("waveform", (None, 40)),))
    assert check_samples({"arr_0": np.ones((2, 40))}, one, "t.npz")["waveform"].shape == (2, 40)
    sig = Signature((TensorSpec("image", (None, 4, 4, 1)), TensorSpec("meta", (None, 2))))
    got = check_samples({"arr_1": np.zeros((3, 2)), "arr_0": np.ones((3, 4, 4, 1))}, sig, "t.npz")
    assert got["image"].shape == (3, 4, 4, 1) and got["meta"].shape == (3, 2)
    with pytest.raises(InputNameError, match=r"keys \['arr_0'\] match no input; inputs \['image', 'meta'\] have no "
                                             r"samples; .* or np.savez's arr_0 to arr_1 in that order"):
        check_samples({"arr_0": np.ones((3, 4, 4, 1))}, sig, "t.npz")  # one array for two inputs: which?
    with pytest.raises(ShapeError, match=r"samples of 'image' have shape \(3, 2\)"):
        check_samples({"arr_0": np.zeros((3, 2)), "arr_1": np.ones((3, 4, 4, 1))}, sig, "t.npz")  # swapped


def test_plan_prefers_samples_then_inferred_ranges_then_uniform(keras, tmp_path):
    x = keras.Input((6,), name="x")
    path = tmp_path / "scaled.keras"
    keras.Model(x, keras.layers.Dense(2)(keras.layers.Rescaling(1 / 255.0)(x))).save(path)
    ref = modelkit.load(path)
    plan = plan_inputs(ref.signature, ref, data={"x": np.ones((4, 6), np.float32)}, data_label="s.npz")
    assert plan.source == "data" and plan.label == "user samples (s.npz, 4 rows)"
    plan = plan_inputs(ref.signature, ref)
    assert plan.source == "inferred" and plan.label.startswith("ranges inferred from the model: 'x' in [0, 255)")
    assert plan.to_dict()["ranges"]["x"]["high"] == pytest.approx(255)
    plain = tmp_path / "plain.keras"
    y = keras.Input((6,), name="x")
    keras.Model(y, keras.layers.Dense(2)(y)).save(plain)
    ref = modelkit.load(plain)
    assert plan_inputs(ref.signature, ref).label == "seeded uniform [0,1), seed 0"


def _reduce_all_onnx(path, batch: int):
    """A real ONNX model with a fixed batch whose one output has no row per input row (a sum over all)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0)], "total",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
                              [helper.make_tensor_value_info("total", TensorProto.FLOAT, [])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    return path


def test_predict_rows_runs_a_fixed_batch_model_over_every_row(tmp_path):
    from modelkit.converters.samples import fixed_batch, predict_rows
    from tests.helpers import make_tiny_onnx
    from tests.helpers.server import tiny_expected

    fixed = modelkit.load(make_tiny_onnx(tmp_path / "b3.onnx", batch=3))
    dynamic = modelkit.load(make_tiny_onnx(tmp_path / "dyn.onnx"))
    assert (fixed_batch(fixed.signature), fixed_batch(dynamic.signature)) == (3, None)
    x = np.random.default_rng(1).random((7, 4), dtype=np.float32)  # 3 + 3 + 1 (the last call filled up)
    out = predict_rows(fixed, {"x": x})["probs"]
    assert out.shape == (7, 3)
    np.testing.assert_allclose(out, tiny_expected(x), atol=1e-6)
    np.testing.assert_allclose(predict_rows(dynamic, {"x": x}, chunk=2)["probs"], out, atol=1e-6)
    with pytest.raises(ShapeError, match="dimension 0 must be 3"):  # rows that disagree: predict's own error
        predict_rows(fixed, {"x": x[:0]})


def test_predict_rows_refuses_an_output_without_rows(tmp_path):
    from modelkit.converters.samples import predict_rows

    model = modelkit.load(_reduce_all_onnx(tmp_path / "total.onnx", batch=2))
    with pytest.raises(ShapeError, match=r"output 'total' has shape \(\), not one row per input row: 5 rows"):
        predict_rows(model, {"x": np.ones((5, 4), np.float32)})
