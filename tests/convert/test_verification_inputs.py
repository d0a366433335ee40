"""Verification inputs that fit the model, end to end: a MobileNetV3 with include_preprocessing (expects
0-255 pixels) converts with its inputs drawn from its Rescaling's raw range; a model that is constant on
[0, 1) but not on its real range is no longer refused as vacuous; an IntegerLookup model is fed its
vocabulary; a really constant model's error says which inputs were used and how to pass real ones."""
from __future__ import annotations

import json

import numpy as np
import pytest

import modelkit
from modelkit.converters.registry import Tolerance
from modelkit.converters.verify import compare_models, verify_artifacts
from modelkit.errors import VacuousParityError
from modelkit.formats import manifest_path


@pytest.fixture(scope="module")
def keras():
    from modelkit._backend import import_keras

    return import_keras("tensorflow")


def test_mobilenet_v3_with_include_preprocessing_converts_on_its_pixel_range(keras, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, include_preprocessing=True,
                                                classes=10)
    # as training would, give the BatchNorm layers the statistics of real 0-255 images (freshly initialised,
    # MobileNetV3 is constant for every input: its activations vanish before the classifier)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(np.random.default_rng(0).uniform(0, 255, (32, 32, 32, 3)).astype("float32"), training=True)
    src = tmp_path / "mnv3.keras"
    model.save(src)
    name = modelkit.load(src).signature.input_names[0]
    rescaling = next(layer.name for layer in model.layers if isinstance(layer, keras.layers.Rescaling))
    results = modelkit.convert(src, "onnx,tflite,saved_model", out_dir=tmp_path)
    assert sorted(r.format for r in results) == ["onnx", "saved_model", "tflite"]
    for r in results:
        assert r.parity["ok"], (r.format, r.parity)
        assert r.parity["inputs"] == (f"ranges inferred from the model: '{name}' in [0, 255) (Rescaling "
                                      f"'{rescaling}': x * 0.007843 - 1 lands in [-1, 1])")
        assert r.parity["outputs"][0]["spread"] > 1e-3  # the reference really varies on these inputs
        extra = json.loads(manifest_path(r.path).read_text())["extra"]["verification_inputs"]
        assert extra["source"] == "inferred" and extra["ranges"][name]["high"] == pytest.approx(255)


@pytest.mark.slow
def test_a_model_constant_on_unit_inputs_is_verified_on_its_raw_range(keras, tmp_path):
    x = keras.Input((8, 8, 3), name="image")
    h = keras.layers.ReLU()(keras.layers.Rescaling(1 / 127.5, offset=-1.0)(x))  # [0, 1) -> all zeros
    src = tmp_path / "pixels.keras"
    keras.utils.set_random_seed(0)
    keras.Model(x, keras.layers.Dense(4, activation="softmax")(keras.layers.Flatten()(h))).save(src)
    (r,) = modelkit.convert(src, "onnx", out_dir=tmp_path)
    assert r.parity["ok"] and "'image' in [0, 255)" in r.parity["inputs"]
    # the same check on [0, 1) proves nothing: the guard refuses it, as it refused this healthy model before
    report = compare_models(modelkit.load(src), modelkit.load(r.path), Tolerance(atol=1e-4))
    assert not report.ok and report.inputs == "seeded uniform [0,1), seed 0"
    assert report.outputs[0].reason.startswith("vacuous check: the reference output is constant")
    # later hops and `modelkit verify` read the ranges from the ONNX model's manifest
    again = verify_artifacts(r.path, r.path)
    assert again.ok and again.inputs.startswith("ranges inferred from the model: 'image' in [0, 255)")


def test_lookup_model_is_fed_its_vocabulary(keras, tmp_path):
    ids = keras.Input((3,), dtype="int64", name="ids")
    lookup = keras.layers.IntegerLookup(vocabulary=[1001, 2002, 3003, 4004], name="lookup")
    keras.utils.set_random_seed(0)
    y = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Embedding(5, 3)(lookup(ids))))
    src = tmp_path / "lookup.keras"
    keras.Model(ids, y).save(src)
    (r,) = modelkit.convert(src, "saved_model", out_dir=tmp_path)  # ids in [0, 10) would all be out of vocabulary
    assert r.parity["ok"]
    assert r.parity["inputs"] == ("ranges inferred from the model: 'ids' in one of [1001, 2002, 3003, 4004, 4005, ...] "
                                  "(IntegerLookup 'lookup': its vocabulary, and unknown ids 4005, -4005, -4006)")


@pytest.mark.slow
def test_embedding_ids_span_the_whole_table(keras, tmp_path):
    from modelkit.converters.samples import plan_inputs
    from modelkit.converters.verify import make_inputs

    ids = keras.Input((6,), dtype="int32", name="ids")
    src = tmp_path / "embed.keras"
    keras.Model(ids, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Embedding(500, 4)(ids)))).save(src)
    ref = modelkit.load(src)
    plan = plan_inputs(ref.signature, ref)
    feed = make_inputs(ref.signature, 64, None, 0, ranges=plan.ranges)["ids"]
    assert feed.min() >= 0 and feed.max() < 500 and feed.max() > 100
    (r,) = modelkit.convert(src, "onnx", out_dir=tmp_path)
    assert r.parity["ok"] and "ids below input_dim 500" in r.parity["inputs"]


@pytest.mark.slow
def test_a_tvm_library_refuses_ids_past_the_embedding_table(keras, tmp_path):
    """TVM's gather reads out of bounds where onnxruntime raises: the library's manifest carries the id range."""
    pytest.importorskip("tvm")
    from modelkit.errors import InputError

    ids = keras.Input((None,), dtype="int32", name="ids")
    keras.utils.set_random_seed(0)
    src = tmp_path / "tagger.keras"
    keras.Model(ids, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 4)(ids)))
                ).save(src)
    onnx_r, tvm_r = modelkit.convert(src, "onnx,tvm", out_dir=tmp_path)
    lib, ort = modelkit.load(tvm_r.path), modelkit.load(onnx_r.path)
    good = np.array([[0, 7, 49]], np.int32)
    got, want = lib.predict(good), ort.predict(good)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)
    with pytest.raises(InputError, match=r"input 'ids': ids must be in \[0, 50\) \(Embedding .*got values from 0 to "
                                         r"9999$"):
        lib.predict(np.array([[0, 7, 9999]], np.int32))


@pytest.mark.slow
def test_a_constant_model_says_which_inputs_were_used_and_how_to_pass_real_ones(keras, tmp_path):
    x = keras.Input((5,), name="x")
    src = tmp_path / "dead.keras"
    keras.Model(x, keras.layers.Dense(3, kernel_initializer="zeros", name="out")(x)).save(src)
    with pytest.raises(VacuousParityError) as info:
        modelkit.convert(src, "onnx", out_dir=tmp_path)
    assert str(info.value).endswith("(inputs: seeded uniform [0,1), seed 0; if the model expects other values, "
                                    "pass real samples with --data samples.npz, keyed by input name)")
    # the reference is what proves nothing: the torch route was tried too, to the same end (its export included)
    assert "route 'torch'" not in str(info.value) and not list(tmp_path.glob("*.torch.*"))


@pytest.mark.slow
def test_an_artifact_verified_on_user_samples_still_records_its_id_range(keras, tmp_path):
    """With --data the manifest recorded no id range, so engines could not check ids (found on a JAX attention
    classifier over token ids converted with --data: id 99 past Embedding(18) ran silently on OpenVINO)."""
    from modelkit.errors import InputError

    ids = keras.Input((None,), dtype="int32", name="ids")
    src = tmp_path / "tagger.keras"
    keras.Model(ids, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(18, 4)(ids)))
                ).save(src)
    samples = tmp_path / "samples.npz"
    np.savez(samples, ids=np.arange(40, dtype=np.int32).reshape(4, 10) % 18)
    (r,) = modelkit.convert(src, "onnx", out_dir=tmp_path, data=str(samples), verbose=False)
    assert "user samples" in r.parity["inputs"]
    with pytest.raises(InputError, match=r"input 'ids': ids must be in \[0, 18\) \(Embedding .*got values from 1 to "
                                         r"99$"):
        modelkit.load(r.path).predict(np.array([[1, 99]], np.int32))


def _masked_pair(keras, tmp_path):
    """A Masking -> LSTM classifier, and the same weights without the Masking layer: an artifact that ignores
    the mask (reads padded steps as data)."""
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 3), name="series")
    lstm, head = keras.layers.LSTM(8), keras.layers.Dense(3, activation="softmax")
    masked = keras.Model(x, head(lstm(keras.layers.Masking(0.0)(x))))
    unmasked = keras.Model(x, head(lstm(x)))
    masked.save(tmp_path / "masked.keras")
    unmasked.save(tmp_path / "unmasked.keras")
    return tmp_path / "masked.keras", tmp_path / "unmasked.keras"


def test_a_masked_models_parity_inputs_are_padded_so_that_ignoring_the_mask_fails(keras, tmp_path):
    """Uniform samples never hold a step of all zeros, so a Masking layer never masked anything during parity:
    an artifact that ignored the mask passed. Inputs a Masking layer (or an Embedding(mask_zero=True)) reads are
    padded with its value in every other row, and such an artifact fails."""
    from modelkit.converters.samples import plan_inputs

    src, wrong = _masked_pair(keras, tmp_path)
    reference = modelkit.load(src)
    plan = plan_inputs(reference.signature, reference)
    assert plan.source == "inferred" and plan.ranges["series"].pad == 0.0
    assert "'series' in uniform, every other row padded with 0 from a random step (Masking" in plan.label
    report = compare_models(reference, modelkit.load(wrong), Tolerance(atol=1e-4), ranges=plan.ranges)
    assert not report.ok
    assert compare_models(reference, modelkit.load(wrong), Tolerance(atol=1e-4)).ok  # what uniform inputs proved
    (r,) = modelkit.convert(src, "onnx", out_dir=tmp_path)  # a converter that keeps the mask passes
    assert r.parity["ok"] and "padded with 0" in r.parity["inputs"]


def test_an_embedding_that_masks_id_0_is_fed_padded_rows(keras, tmp_path):
    from modelkit.converters.samples import generate, plan_inputs
    from modelkit.spec import TensorSpec

    ids = keras.Input((12,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(5000, 4, mask_zero=True)(ids)  # a vocabulary where 0 is rarely drawn
    src = tmp_path / "tagger.keras"
    keras.Model(ids, keras.layers.Dense(2)(keras.layers.GRU(4, return_sequences=True)(h))).save(src)
    reference = modelkit.load(src)
    r = plan_inputs(reference.signature, reference).ranges["tokens"]
    assert (r.low, r.high, r.pad) == (0, 5000, 0.0) and "0 pads (mask_zero)" in r.why
    x = generate(TensorSpec("tokens", (None, 12), "int32"), (6, 12), np.random.default_rng(0), r)
    assert all((x[row, -1] == 0) for row in (1, 3, 5)) and (x[0] > 0).all() and x.max() < 5000
