"""Training recipes: optimizers with schedules, regularizers, early stopping, best checkpoint, resume."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from modelkit import manifest
from modelkit._backend import import_keras
from modelkit.core.train import train
from modelkit.errors import TrainingError
from modelkit.keras_io.files import check_keras_archive, load_keras

TINY = {"model": "mlp", "epochs": 1, "learning_rate": 0.01, "verbose": False}


@pytest.fixture(scope="module")
def keras():
    return import_keras()


@pytest.mark.parametrize("optimizer, schedule, opt_class, lr_class", [
    ("adam", "constant", "Adam", None),
    ("rmsprop", "exponential", "RMSprop", "ExponentialDecay"),
    ("sgd", "cosine", "SGD", "CosineDecay"),
])
@pytest.mark.slow
def test_each_optimizer_and_schedule_trains(keras, tmp_path: Path, optimizer: str, schedule: str, opt_class: str,
                                            lr_class: str | None) -> None:
    out = tmp_path / "m.keras"
    lr = 0.1 if optimizer == "sgd" else 0.01  # plain SGD needs a larger step to learn in one epoch
    summary = train(optimizer=optimizer, schedule=schedule, momentum=0.5, out=out, **{**TINY, "learning_rate": lr})
    assert summary["history"]["loss"][0] < 2.4 and np.isfinite(summary["history"]["val_loss"][0])
    assert summary["test_accuracy"] > 0.2  # 10 classes: chance is 0.1
    opt = check_keras_archive(out)["compile_config"]["optimizer"]
    assert opt["class_name"] == opt_class
    lr_config = opt["config"]["learning_rate"]
    if lr_class is None:
        assert lr_config == pytest.approx(lr)
    else:
        assert lr_config["class_name"] == lr_class and lr_config["config"]["initial_learning_rate"] == pytest.approx(lr)
    if optimizer == "sgd":
        assert opt["config"]["momentum"] == pytest.approx(0.5)
        assert lr_config["config"]["decay_steps"] == 21  # 1 epoch of 1,293 rows in batches of 64
    if schedule == "exponential":
        assert lr_config["config"]["decay_steps"] == 21 and lr_config["config"]["decay_rate"] == pytest.approx(0.9)


@pytest.mark.parametrize("model, settings", [
    ("mlp", {"l1": 1e-4}),
    ("mlp", {"l2": 1e-3, "dropout": 0.3}),
    ("mlp", {"batch_norm": True}),
    ("cnn", {"batch_norm": False, "units": 8}),
])
@pytest.mark.slow
def test_each_regularizer_trains(keras, tmp_path: Path, model: str, settings: dict) -> None:
    out = tmp_path / "m.keras"
    summary = train(out=out, **{**TINY, "model": model}, **settings)
    assert np.isfinite(summary["history"]["loss"][0]) and summary["test_accuracy"] > 0.1
    net = load_keras(out)
    layers = [type(layer).__name__ for layer in net.layers]
    kernel = net.get_layer("dense1" if model == "mlp" else "block1_conv")
    if "l1" in settings:
        reg = kernel.kernel_regularizer.get_config()
        assert reg["l1"] == pytest.approx(1e-4) and reg["l2"] == 0.0
        assert float(keras.ops.convert_to_numpy(net.losses[0])) == pytest.approx(
            1e-4 * float(np.abs(kernel.get_weights()[0]).sum()), rel=1e-4)
    if "dropout" in settings:
        assert net.get_layer("dropout").rate == pytest.approx(0.3)
        assert kernel.kernel_regularizer.l2 == pytest.approx(1e-3)
    if settings.get("batch_norm") is True:
        assert layers.count("BatchNormalization") == 2  # mlp has none by default
    if settings.get("batch_norm") is False:
        assert "BatchNormalization" not in layers and kernel.use_bias and kernel.filters == 8
    assert manifest.read(out).training["batch_norm"] == settings.get("batch_norm")


class _InterruptAt:
    """Raises KeyboardInterrupt (what Ctrl-C raises) at the end of one epoch, after the checkpoint."""

    def __new__(cls, keras, epoch: int):
        class Interrupt(keras.callbacks.Callback):
            def on_epoch_end(self, e, logs=None):
                if e + 1 == epoch:
                    raise KeyboardInterrupt

        return Interrupt()


def test_interrupt_then_resume_continues_at_the_right_epoch(keras, tmp_path: Path, capsys) -> None:
    out, ckpt, csv_path = tmp_path / "m.keras", tmp_path / "ckpt", tmp_path / "h.csv"
    args = {**TINY, "epochs": 3, "optimizer": "sgd", "schedule": "cosine", "out": out, "checkpoint_dir": ckpt,
            "history_csv": csv_path}
    with pytest.raises(TrainingError, match=r"interrupted after 2 of 3 epochs; checkpoint saved .*--resume"):
        train(callbacks=[_InterruptAt(keras, 2)], **args)
    assert not out.exists()
    state = json.loads((ckpt / "state.json").read_text())
    assert state["epoch"] == 2 and state["interrupted"] and len(state["history"]["loss"]) == 2
    saved = keras.saving.load_model(ckpt / "last.keras", compile=True)
    assert int(keras.ops.convert_to_numpy(saved.optimizer.iterations)) == 2 * 21  # optimizer state is saved
    summary = train(resume=True, **{**args, "verbose": True})
    err = capsys.readouterr().err
    assert "epoch 3/3" in err and "epoch 1/3" not in err and "epoch 2/3" not in err
    assert summary["resumed_from_epoch"] == 2 and summary["epochs_run"] == 3
    assert summary["history"]["loss"][:2] == state["history"]["loss"]
    final = keras.saving.load_model(out, compile=True)
    assert int(keras.ops.convert_to_numpy(final.optimizer.iterations)) == 3 * 21  # counted on, not restarted
    with open(csv_path) as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["0", "1", "2"]  # appended after resume
    assert (ckpt / "best.keras").is_file() and not (ckpt / "last.keras").exists()  # finished: nothing to resume
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(resume=True, **{**args, "out": tmp_path / "again.keras"})


class _CtrlCAt:
    """Sends this process a real SIGINT (what a terminal's Ctrl-C sends), `times` times, as one batch of the
    second epoch begins; counts the batches begun and ended."""

    def __new__(cls, keras, batch: int, times: int):
        import os
        import signal

        class CtrlC(keras.callbacks.Callback):
            begun = ended = 0

            def on_train_batch_begin(self, b, logs=None):
                CtrlC.begun += 1
                if CtrlC.begun == 21 + batch + 1:
                    for _ in range(times):
                        os.kill(os.getpid(), signal.SIGINT)

            def on_train_batch_end(self, b, logs=None):
                CtrlC.ended += 1

        return CtrlC()


def test_ctrl_c_lets_the_batch_finish_then_saves_the_checkpoint(keras, tmp_path: Path, capsys,
                                                                   python_sigint) -> None:
    """Raised where it lands, Ctrl-C could crash TensorFlow (SIGSEGV in its tensor conversion, the checkpoint
    lost): it is taken when the batch it came in has finished (modelkit.core.interrupt), and Python's own SIGINT
    handler is back afterwards."""
    import signal

    ckpt = tmp_path / "ckpt"
    ctrl_c = _CtrlCAt(keras, batch=3, times=1)
    with pytest.raises(TrainingError, match=r"interrupted after 1 of 3 epochs; checkpoint saved"):
        train(callbacks=[ctrl_c], **{**TINY, "epochs": 3, "out": tmp_path / "m.keras", "checkpoint_dir": ckpt})
    assert type(ctrl_c).begun == type(ctrl_c).ended == 21 + 4  # the batch it came in ran to its end, no further
    saved = keras.saving.load_model(ckpt / "last.keras", compile=True)
    assert int(keras.ops.convert_to_numpy(saved.optimizer.iterations)) == 21 + 4
    assert "Ctrl-C: stopping at the end of this batch to save a checkpoint" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_stops_at_once_and_still_saves_the_checkpoint(keras, tmp_path: Path, python_sigint) -> None:
    ckpt = tmp_path / "ckpt"
    ctrl_c = _CtrlCAt(keras, batch=3, times=2)
    with pytest.raises(TrainingError, match=r"interrupted after 1 of 3 epochs; checkpoint saved"):
        train(callbacks=[ctrl_c], **{**TINY, "epochs": 3, "out": tmp_path / "m.keras", "checkpoint_dir": ckpt})
    assert (type(ctrl_c).begun, type(ctrl_c).ended) == (21 + 4, 21 + 3)  # stopped inside the batch
    saved = keras.saving.load_model(ckpt / "last.keras", compile=True)
    assert int(keras.ops.convert_to_numpy(saved.optimizer.iterations)) == 21 + 3


def test_resume_refuses_other_settings(keras, tmp_path: Path) -> None:
    args = {**TINY, "epochs": 2, "out": tmp_path / "m.keras"}
    with pytest.raises(TrainingError, match="interrupted after 1 of 2"):
        train(callbacks=[_InterruptAt(keras, 1)], **args)
    assert (tmp_path / "m.keras.ckpt" / "last.keras").is_file()  # the default checkpoint folder
    with pytest.raises(TrainingError, match="cannot resume: seed was 0"):
        train(resume=True, seed=1, **args)


def test_early_stopping_restores_the_best_epoch(keras, tmp_path: Path) -> None:
    out, ckpt = tmp_path / "m.keras", tmp_path / "ckpt"
    summary = train(**{**TINY, "epochs": 40, "learning_rate": 0.03, "units": 256}, patience=1, out=out,
                    checkpoint_dir=ckpt)
    val = summary["history"]["val_loss"]
    assert summary["epochs_run"] == len(val) < 40  # stopped early
    best_epoch = int(np.argmin(val))
    assert best_epoch == len(val) - 2  # patience 1: one bad epoch after the best
    final, best = load_keras(out), load_keras(ckpt / "best.keras")
    for a, b in zip(final.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)  # the saved model is the best epoch's
