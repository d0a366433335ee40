"""Training recipes: train a zoo model on shipped data, save the .keras atomically, write its manifest.

A Keras backend is fixed per process. `train` runs in this process when Keras is not imported yet or is
imported with the wanted backend; otherwise it runs `_train_here` in a child process with that backend
(modelkit._child), so one Python session can train under TensorFlow, torch and JAX.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic, _child, manifest
from .._backend import check_backend, import_keras, loaded_backend, requested_backend
from ..errors import TrainingError
from . import data as _data
from . import zoo

OPTIMIZERS: dict[str, str] = {
    "adam": "Adam",
    "rmsprop": "RMSprop",
    "sgd": "SGD with momentum 0.9",
}
VALIDATION_FRACTION = 0.1  # of the training split, held out for the per-epoch val accuracy


def check_optimizer(name: str) -> str:
    """Return `name` if it is a known optimizer, else raise TrainingError listing the valid ones."""
    if name not in OPTIMIZERS:
        raise TrainingError(f"unknown optimizer '{name}'; valid optimizers: {', '.join(OPTIMIZERS)}")
    return name


def train(model: str = "cnn", data: str = "digits", epochs: int = 5, backend: str | None = None,
          optimizer: str = "adam", learning_rate: float = 1e-3, l2: float = 0.0, dropout: float = 0.0,
          batch_size: int = 64, seed: int = 0, out: str | os.PathLike = "model.keras", force: bool = False,
          verbose: bool = True) -> dict[str, Any]:
    """Train `model` on `data`, save it to `out` (.keras) with a manifest; return a JSON-able summary.

    The summary holds test_accuracy (on the held-out test split), train_seconds, backend, path,
    manifest path, parameter count and the per-epoch history. Arguments are checked, and an existing
    `out` refused (ArtifactExistsError) unless force, before anything heavy is imported.
    """
    backend = check_backend(backend) if backend else requested_backend()
    zoo.check_model(model)
    _data.check_data(data)
    check_optimizer(optimizer)
    if epochs < 1 or batch_size < 1:
        raise TrainingError(f"epochs and batch_size must be >= 1, got epochs={epochs}, batch_size={batch_size}")
    if not (0 < learning_rate < float("inf")):
        raise TrainingError(f"learning_rate must be a finite number > 0, got {learning_rate}")
    dest = Path(out)
    if dest.suffix != ".keras":
        raise TrainingError(f"the output must be a .keras file, got '{dest}'")
    _atomic.check_writable(dest, force)
    kwargs = {"model": model, "data": data, "epochs": int(epochs), "backend": backend, "optimizer": optimizer,
              "learning_rate": float(learning_rate), "l2": float(l2), "dropout": float(dropout),
              "batch_size": int(batch_size), "seed": int(seed), "out": str(dest.resolve()), "force": bool(force),
              "verbose": bool(verbose)}
    if loaded_backend() in (None, backend):
        return _train_here(**kwargs)
    return _child.run("modelkit.core.train:_train_here", kwargs, backend=backend)


def _train_here(model: str, data: str, epochs: int, backend: str, optimizer: str, learning_rate: float,
                l2: float, dropout: float, batch_size: int, seed: int, out: str, force: bool,
                verbose: bool) -> dict[str, Any]:
    """The in-process worker of `train` (also the function a child process runs); Keras gets `backend`."""
    from .keras_io import keras_signature

    keras = import_keras(backend)
    keras.utils.set_random_seed(seed)
    ds = _data.load(data, seed=seed)
    net = zoo.build_model(model, num_classes=ds.num_classes, dropout=dropout, l2=l2, seed=seed)
    names = [t.name for t in net.inputs]
    fit_idx, val_idx = _validation_split(ds.y_train, seed)

    def xs(images: np.ndarray) -> Any:
        feed = _data.model_inputs(model, images)
        arrays = [feed[n] for n in names]  # the model's own input order: no structure warnings
        return arrays if len(arrays) > 1 else arrays[0]

    def ys(images: np.ndarray, labels: np.ndarray) -> Any:
        y = _data.model_targets(model, images, labels)
        return [y[n] for n in net.output_names] if isinstance(y, dict) else y

    x_fit, x_val = ds.x_train[fit_idx], ds.x_train[val_idx]
    y_fit, y_val = ds.y_train[fit_idx], ds.y_train[val_idx]
    net.compile(optimizer=_optimizer(keras, optimizer, learning_rate), **_loss_and_metrics(model))
    t0 = time.perf_counter()
    hist = net.fit(xs(x_fit), ys(x_fit, y_fit), validation_data=(xs(x_val), ys(x_val, y_val)),
                   epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
                   callbacks=[_epoch_printer(keras, epochs)] if verbose else [])
    train_seconds = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    if not np.isfinite(history["loss"][-1]):
        raise TrainingError(f"training diverged (loss {history['loss'][-1]}); lower the learning rate "
                            f"(now {learning_rate})")
    test_accuracy = _accuracy(keras, net, xs(ds.x_test), ds.y_test)
    with _atomic.atomic_path(out, force) as tmp:
        net.save(tmp)
    training = {"model": model, "data": data, "backend": backend, "epochs": epochs, "optimizer": optimizer,
                "learning_rate": learning_rate, "l2": l2, "dropout": dropout, "batch_size": batch_size,
                "seed": seed, "test_accuracy": test_accuracy, "train_seconds": round(train_seconds, 3),
                "params": int(net.count_params()), "keras_version": keras.__version__, "history": history}
    mpath = manifest.write(out, manifest.Manifest(format="keras", signature=keras_signature(net).to_dict(),
                                                  training=training))
    summary = {**training, "path": str(out), "manifest": str(mpath)}
    if verbose:
        print(f"test accuracy {test_accuracy:.4f} on {len(ds.y_test)} held-out images", file=sys.stderr,
              flush=True)
    return summary


def _validation_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded indices (fit, validation) of the training split."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    fit_idx, val_idx = train_test_split(idx, test_size=VALIDATION_FRACTION, random_state=seed, stratify=labels)
    return np.sort(fit_idx), np.sort(val_idx)


def _optimizer(keras: Any, name: str, learning_rate: float) -> Any:
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    raise TrainingError(f"unknown optimizer '{name}'; valid optimizers: {', '.join(OPTIMIZERS)}")


def _loss_and_metrics(model: str) -> dict[str, Any]:
    if model == "multi_io":
        return {"loss": ["sparse_categorical_crossentropy", "mse"], "loss_weights": [1.0, 1.0],
                "metrics": [["accuracy"], []]}
    return {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}


def _accuracy(keras: Any, net: Any, x: Any, labels: np.ndarray, batch: int = 256) -> float:
    """Top-1 accuracy of the model's class probabilities (its first output) on labelled inputs.

    Calls the model directly rather than `predict`, which would trace a new TF function per model.
    """
    hits = 0
    for start in range(0, len(labels), batch):
        part = [a[start:start + batch] for a in x] if isinstance(x, list) else x[start:start + batch]
        out = net(part, training=False)
        probs = out[0] if isinstance(out, (list, tuple)) else out
        hits += int(np.sum(np.argmax(keras.ops.convert_to_numpy(probs), axis=-1) == labels[start:start + batch]))
    return hits / len(labels)


def _metric(logs: dict[str, Any], name: str) -> float | None:
    """A metric from Keras logs; multi-output models prefix it with the output name ('probs_accuracy')."""
    for key in (name, name.replace("accuracy", "probs_accuracy")):
        if key in logs:
            return float(logs[key])
    return None


def _epoch_printer(keras: Any, epochs: int) -> Any:
    """A Keras callback printing one line per epoch to stderr (stdout stays free for results)."""

    class EpochPrinter(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            parts = [f"epoch {epoch + 1}/{epochs}", f"loss {float(logs.get('loss', float('nan'))):.4f}"]
            for label, key in (("accuracy", "accuracy"), ("val accuracy", "val_accuracy")):
                value = _metric(logs, key)
                if value is not None:
                    parts.append(f"{label} {value:.4f}")
            parts.append(f"{time.perf_counter() - self._t0:.1f} s")
            print("  ".join(parts), file=sys.stderr, flush=True)

    return EpochPrinter()
