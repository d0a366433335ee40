"""modelkit.core.train: real training on digits, under two Keras backends, saved atomically with a manifest.

The CNN accuracy runs go through modelkit._child so each gets a fresh process with its own backend;
the rest train tiny models in this process, under whichever backend it has.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelkit import _child, manifest
from modelkit._backend import BACKENDS, import_keras, loaded_backend
from modelkit.core import data
from modelkit.core.train import train
from modelkit.errors import ArtifactExistsError, ModelkitError, TrainingError
from modelkit.keras_io.files import call_model, check_keras_archive, keras_signature, load_keras

TINY = {"model": "mlp", "epochs": 1, "learning_rate": 0.01, "verbose": False}


@pytest.fixture(scope="module")
def keras():
    return import_keras()


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("torch", marks=pytest.mark.slow)])
def test_cnn_on_digits_reaches_090(keras, tmp_path: Path, backend: str) -> None:
    out = tmp_path / f"cnn-{backend}.keras"
    summary = _child.run("modelkit.core.train:train",
                         {"model": "cnn", "epochs": 5, "backend": backend, "out": str(out), "verbose": False},
                         backend=backend)
    assert summary["backend"] == backend and summary["test_accuracy"] >= 0.9
    assert summary["path"] == str(out.resolve()) and out.is_file()
    assert len(summary["history"]["loss"]) == 5 and summary["history"]["loss"][-1] < summary["history"]["loss"][0]
    man = manifest.read(out)
    assert man is not None and man.format == "keras"
    assert man.training["test_accuracy"] == summary["test_accuracy"]
    assert man.training["backend"] == backend and man.training["epochs"] == 5
    assert man.sig.input_names == ["image"] and man.sig.output_names == ["probs"]
    assert man.sha256 == manifest.sha256_of(out)
    # the saved file reproduces the recorded accuracy here, whichever backend trained it
    model = load_keras(out)
    feed, labels = data.test_split("digits", "cnn")
    probs = call_model(model, feed, keras_signature(model))["probs"]
    assert float(np.mean(probs.argmax(axis=1) == labels)) == pytest.approx(summary["test_accuracy"], abs=0.01)


@pytest.mark.slow
def test_other_backend_runs_in_a_child(keras, tmp_path: Path) -> None:
    here = loaded_backend()
    other = next(b for b in ("torch", "tensorflow") if b != here)
    summary = train(backend=other, out=tmp_path / "m.keras", **TINY)
    assert summary["backend"] == other and loaded_backend() == here
    assert manifest.read(tmp_path / "m.keras").training["backend"] == other


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, class_name", [("adam", "Adam"), ("rmsprop", "RMSprop"), ("sgd", "SGD")])
def test_each_optimizer_trains(keras, tmp_path: Path, optimizer: str, class_name: str) -> None:
    out = tmp_path / f"{optimizer}.keras"
    summary = train(optimizer=optimizer, out=out, **{**TINY, "epochs": 2})
    assert summary["optimizer"] == optimizer and summary["backend"] == loaded_backend()
    assert summary["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert np.isfinite(summary["history"]["loss"]).all() and len(summary["history"]["val_accuracy"]) == 2
    opt = check_keras_archive(out)["compile_config"]["optimizer"]
    assert opt["class_name"] == class_name
    assert opt["config"]["learning_rate"] == pytest.approx(0.01)
    if optimizer == "sgd":
        assert opt["config"]["momentum"] == pytest.approx(0.9)


@pytest.mark.slow
def test_multi_io_trains_both_heads(keras, tmp_path: Path) -> None:
    summary = train(model="multi_io", epochs=3, out=tmp_path / "mi.keras", verbose=False, l2=1e-4, dropout=0.1)
    hist = summary["history"]
    assert {"probs_accuracy", "intensity_loss", "val_probs_accuracy"} <= set(hist)
    assert hist["val_intensity_loss"][-1] < hist["val_intensity_loss"][0]  # the regression head learns
    assert hist["val_probs_accuracy"][-1] > hist["val_probs_accuracy"][0]
    man = manifest.read(tmp_path / "mi.keras")
    assert man.sig.input_names == ["image", "features"] and man.sig.output_names == ["probs", "intensity"]
    assert man.training["l2"] == 1e-4 and man.training["dropout"] == 0.1


def test_progress_lines(keras, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train(out=tmp_path / "m.keras", **{**TINY, "epochs": 2, "verbose": True})
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "val accuracy" in err and "test accuracy" in err


def test_refuses_to_overwrite_without_force(keras, tmp_path: Path) -> None:
    out = tmp_path / "m.keras"
    out.write_bytes(b"precious")
    with pytest.raises(ArtifactExistsError, match="exists"):
        train(out=out, **TINY)
    assert out.read_bytes() == b"precious" and not _leftovers(tmp_path)
    summary = train(out=out, force=True, **TINY)
    assert check_keras_archive(out)["class_name"] == "Functional" and summary["path"] == str(out.resolve())


def test_divergence_leaves_no_file(keras, tmp_path: Path) -> None:
    out = tmp_path / "m.keras"
    with pytest.raises(TrainingError, match="diverged"):
        train(out=out, **{**TINY, "optimizer": "sgd", "learning_rate": 1e30})
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("kwargs, message", [
    ({"optimizer": "adagrad"}, "unknown optimizer 'adagrad'; valid optimizers: adam, rmsprop, sgd"),
    ({"model": "resnet"}, "valid models: mlp, cnn, multi_io, mobilenetv2, lstm"),
    ({"data": "mnist"}, "valid data sets: digits"),
    ({"out": "model.h5"}, "must be a .keras file"),
    ({"epochs": 0}, "epochs"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"learning_rate": float("inf")}, "learning_rate"),
])
def test_bad_arguments_fail_before_training(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"out": str(tmp_path / "m.keras"), **kwargs}
    with pytest.raises(TrainingError, match=message.replace(".", r"\.")) as info:
        train(**args)
    assert isinstance(info.value, (ModelkitError, ValueError)) and not list(tmp_path.iterdir())


def test_unknown_backend(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=", ".join(BACKENDS)):
        train(backend="mxnet", out=tmp_path / "m.keras")
