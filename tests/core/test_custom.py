"""A user's custom layer and loss (examples/custom_layer.py): trained by modelkit, saved, reloaded in
safe mode, and converted in a child process that imports the user's module via MODELKIT_IMPORTS."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import manifest
from modelkit._backend import import_keras
from modelkit.core import data
from modelkit.core.train import train
from modelkit.errors import ModelkitError, TrainingError, UnsafeModelError
from modelkit.keras_io import custom
from modelkit.keras_io.files import check_keras_archive, load_keras

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_layer.py"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    import_keras()
    out = tmp_path_factory.mktemp("custom") / "custom.keras"
    summary = train(model=f"{EXAMPLE}:build", loss="FocalLoss", epochs=2, learning_rate=0.01, verbose=False, out=out)
    return out, summary


def test_trains_with_the_custom_layer_and_loss(trained) -> None:
    out, summary = trained
    assert summary["test_accuracy"] > 0.5 and summary["history"]["loss"][1] < summary["history"]["loss"][0]
    config = check_keras_archive(out)
    assert config["compile_config"]["loss"]["registered_name"] == "modelkit_examples>FocalLoss"
    layer = next(x for x in config["config"]["layers"] if x["config"]["name"] == "gated")
    assert layer["registered_name"] == "modelkit_examples>GatedDense"
    training = manifest.read(out).training
    assert training["imports"] == [str(EXAMPLE)] and training["custom_objects"] == [
        "modelkit_examples>FocalLoss", "modelkit_examples>GatedDense"]


def test_focal_loss_value() -> None:
    keras = import_keras()
    module = custom.import_module(str(EXAMPLE))
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    labels = np.array([0, 1])
    got = float(keras.ops.convert_to_numpy(module.FocalLoss(gamma=2.0)(labels, probs)))
    expected = np.mean([-(0.3 ** 2) * np.log(0.7), -(0.9 ** 2) * np.log(0.1)])
    assert got == pytest.approx(expected, rel=1e-5)
    assert custom.resolve_loss(keras, "FocalLoss").gamma == 2.0
    assert custom.resolve_loss(keras, "modelkit_examples>FocalLoss").name == "focal_loss"
    with pytest.raises(TrainingError, match="unknown loss 'nope'"):
        custom.resolve_loss(keras, "nope")


def test_safe_load_allows_registered_objects_and_refuses_lambda(trained, tmp_path: Path) -> None:
    keras = import_keras()
    out, summary = trained
    net = load_keras(out)  # safe mode on
    assert type(net.get_layer("gated")).__name__ == "GatedDense"
    feed, labels = data.test_split("digits", "mlp")
    probs = keras.ops.convert_to_numpy(net(feed["features"]))
    assert float(np.mean(probs.argmax(1) == labels)) == pytest.approx(summary["test_accuracy"], abs=1e-9)
    module = custom.import_module(str(EXAMPLE))
    inp = keras.Input((64,), name="features")
    x = module.GatedDense(8, name="gated")(inp)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    lam = tmp_path / "lambda.keras"
    keras.Model(inp, x).save(lam)
    with pytest.raises(UnsafeModelError, match="refused to load"):
        load_keras(lam)


def test_converts_in_a_child_that_imports_the_module(trained, tmp_path: Path, monkeypatch) -> None:
    out, _ = trained
    monkeypatch.delenv(custom.ENV_IMPORTS, raising=False)
    # this process registered GatedDense (training imported the example): its module is passed to the child
    assert "custom_layer" in custom.registered_imports()[0]
    (passed_on,) = modelkit.convert(out, "onnx", out_dir=tmp_path / "passed_on")
    assert passed_on.parity["ok"]
    monkeypatch.setattr(custom, "registered_imports", lambda: ([], []))  # a caller that never imported it
    with pytest.raises(ModelkitError, match="GatedDense"):  # the child does not know the class
        modelkit.convert(out, "onnx", out_dir=tmp_path / "without")
    monkeypatch.setenv(custom.ENV_IMPORTS, str(EXAMPLE))
    (result,) = modelkit.convert(out, "onnx", out_dir=tmp_path)
    assert result.parity["ok"] and result.max_abs < 1e-4
    onnx_model = modelkit.load(result.path)
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    keras_probs = import_keras().ops.convert_to_numpy(load_keras(out)(x))
    np.testing.assert_allclose(onnx_model.predict({"features": x})["probs"], keras_probs, atol=1e-5)
