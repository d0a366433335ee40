"""The Keras engine: safe mode on by default, the loud trust flag, validation before Keras runs."""
import numpy as np
import pytest

import modelkit
from modelkit.errors import DTypeError, LoadError, ShapeError, UnsafeModelError


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    x = keras.Input((4,), name="x")
    y = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    path = tmp_path_factory.mktemp("lambda") / "lambda.keras"
    keras.Model(x, y).save(path)
    return path


def test_lambda_layer_is_refused_in_safe_mode(lambda_model):
    with pytest.raises(UnsafeModelError, match="--trust-unsafe-code"):
        modelkit.load(lambda_model)


def test_lambda_layer_loads_with_explicit_trust(lambda_model):
    m = modelkit.load(lambda_model, trust_unsafe_code=True)
    np.testing.assert_allclose(m.predict(np.ones((2, 4), np.float32))["double"], 2.0)


def test_keras_engine_matches_training_accuracy(cnn_tf):
    from modelkit.core.data import test_split
    from modelkit.manifest import read

    m = modelkit.load(cnn_tf)
    assert m.engine == "keras/tensorflow" and m.signature.input_names == ["image"]
    inputs, labels = test_split("digits", "cnn")
    acc = float((m.predict(inputs)["probs"].argmax(-1) == labels).mean())
    assert abs(acc - read(cnn_tf).training["test_accuracy"]) < 1e-6


def test_bad_inputs_never_reach_keras(cnn_tf):
    m = modelkit.load(cnn_tf)
    with pytest.raises(ShapeError, match=r"expected rank 4 \(\?, 8, 8, 1\)"):
        m.predict(np.zeros((8, 8, 1), np.float32))
    with pytest.raises(DTypeError, match="float64"):
        m.predict(np.zeros((1, 8, 8, 1)))


def test_damaged_keras_file_is_a_load_error(tmp_path, cnn_tf):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(cnn_tf.read_bytes()[:2000])
    with pytest.raises((LoadError, modelkit.errors.FormatError)):
        modelkit.load(bad)


def test_cuda_is_refused_by_cpu_only_engines(cnn_tf):
    with pytest.raises(LoadError, match="supported: cpu"):
        modelkit.load(cnn_tf, device="cuda")
