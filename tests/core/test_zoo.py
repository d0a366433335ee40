"""modelkit.core.zoo: each reference model builds with the stated names and shapes, and runs."""
from __future__ import annotations

import numpy as np
import pytest

from modelkit._backend import import_keras
from modelkit.core import data, zoo
from modelkit.errors import ModelkitError, TrainingError
from modelkit.keras_io.files import keras_signature

EXPECTED = {
    "mlp": ({"features": (None, 64)}, {"probs": (None, 10)}),
    "cnn": ({"image": (None, 8, 8, 1)}, {"probs": (None, 10)}),
    "multi_io": ({"image": (None, 8, 8, 1), "features": (None, 8)}, {"probs": (None, 10), "intensity": (None, 1)}),
    "mobilenetv2": ({"image": (None, 32, 32, 3)}, {"probs": (None, 10)}),
    "lstm": ({"sequence": (None, 8, 8)}, {"probs": (None, 10)}),
    "gru": ({"sequence": (None, 8, 8)}, {"probs": (None, 10)}),
    "transformer": ({"sequence": (None, 8, 8)}, {"probs": (None, 10)}),
    "separable": ({"image": (None, 8, 8, 1)}, {"probs": (None, 10)}),
    "autoencoder": ({"image": (None, 8, 8, 1)}, {"reconstruction": (None, 8, 8, 1)}),
}


@pytest.fixture(scope="module")
def keras():
    return import_keras()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return data.load_digits_split().x_test[:6]


def _kernels(model) -> list:
    return [w for w in model.trainable_weights if w.path.endswith("kernel")]


def test_models_list_is_the_zoo() -> None:
    assert list(zoo.MODELS) == list(EXPECTED)
    assert all(isinstance(v, str) and v for v in zoo.MODELS.values())


@pytest.mark.parametrize("name", list(EXPECTED))
def test_build_names_shapes_and_forward(keras, images: np.ndarray, name: str) -> None:
    model = zoo.build_model(name)
    sig = keras_signature(model)
    want_in, want_out = EXPECTED[name]
    assert {s.name: s.shape for s in sig.inputs} == want_in
    assert {s.name: s.shape for s in sig.outputs} == want_out
    feed = data.model_inputs(name, images)
    out = model([feed[n] for n in sig.input_names] if len(feed) > 1 else feed[sig.input_names[0]])
    outs = dict(zip(sig.output_names, out if isinstance(out, (list, tuple)) else [out]))
    assert not model.losses  # no regularization unless asked
    if name == "autoencoder":  # reconstructs its input: sigmoid pixels
        recon = keras.ops.convert_to_numpy(outs["reconstruction"])
        assert recon.shape == (6, 8, 8, 1) and 0.0 < recon.min() and recon.max() < 1.0
        return
    assert sig.output_names[0] == "probs"  # the classifier comes first
    probs = keras.ops.convert_to_numpy(outs["probs"])
    assert probs.shape == (6, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_mobilenetv2_is_small_and_configurable(keras) -> None:
    small = zoo.build_model("mobilenetv2")
    assert small.count_params() < 600_000  # alpha 0.35
    assert zoo.build_model("mobilenetv2", alpha=0.5).count_params() > small.count_params()
    big = zoo.build_model("mobilenetv2", input_shape=(96, 96, 3), num_classes=5)
    sig = keras_signature(big)
    assert sig.inputs[0].shape == (None, 96, 96, 3) and sig.outputs[0].shape == (None, 5)
    with pytest.raises(TrainingError, match="H, W >= 32"):
        zoo.build_model("mobilenetv2", input_shape=(16, 16, 3))


def test_l2_adds_one_loss_per_kernel(keras) -> None:
    model = zoo.build_model("mlp", l2=1e-3)
    kernels = _kernels(model)
    assert len(model.losses) == len(kernels) == 3
    total = float(sum(keras.ops.convert_to_numpy(x) for x in model.losses))
    expected = 1e-3 * sum(float(np.sum(keras.ops.convert_to_numpy(k) ** 2)) for k in kernels)
    assert total == pytest.approx(expected, rel=1e-5) and total > 0
    for name in ("cnn", "multi_io", "mobilenetv2", "lstm", "transformer", "separable", "autoencoder"):
        model = zoo.build_model(name, l2=1e-4)
        assert len(model.losses) == len(_kernels(model)) >= 3


def test_dropout_layer_only_when_asked(keras) -> None:
    with_dropout = zoo.build_model("cnn", dropout=0.3)
    layer = with_dropout.get_layer("dropout")
    assert isinstance(layer, keras.layers.Dropout) and layer.rate == pytest.approx(0.3)
    assert not any(isinstance(x, keras.layers.Dropout) for x in zoo.build_model("cnn").layers)
    with pytest.raises(TrainingError, match="dropout"):
        zoo.build_model("cnn", dropout=1.0)


def test_seed_fixes_initial_weights(keras) -> None:
    a, b, c = (zoo.build_model("cnn", seed=s) for s in (7, 7, 8))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_unknown_model() -> None:
    with pytest.raises(TrainingError) as info:
        zoo.build_model("resnet50")
    assert str(info.value) == ("unknown model 'resnet50'; valid models: mlp, cnn, multi_io, mobilenetv2, lstm, gru, "
                               "transformer, separable, autoencoder")
    assert isinstance(info.value, ModelkitError)


def test_input_shape_only_for_mobilenetv2() -> None:
    with pytest.raises(TrainingError, match="mobilenetv2 only"):
        zoo.build_model("cnn", input_shape=(16, 16, 1))
