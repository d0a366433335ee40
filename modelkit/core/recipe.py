"""The pieces of a training recipe: the network, its inputs and targets, optimizer with learning-rate
schedule, loss and metrics. Shared by plain training, hyperparameter search and distributed training."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import TrainingError
from ..keras_io import custom
from . import data as _data
from . import zoo
from .config import OPTIMIZERS, TrainConfig

VALIDATION_FRACTION = 0.1  # of the training split, held out for the per-epoch validation metrics


def task_of(cfg: TrainConfig) -> str:
    return "custom" if custom.is_user_model(cfg.model) else zoo.TASKS[cfg.model]


def build_net(cfg: TrainConfig, num_classes: int, **overrides: Any) -> Any:
    """The uncompiled network: a zoo model or the user's builder; overrides come from a search trial."""
    values = {"dropout": cfg.dropout, "l1": cfg.l1, "l2": cfg.l2, "units": cfg.units, "batch_norm": cfg.batch_norm,
              "seed": cfg.seed, **overrides}
    if custom.is_user_model(cfg.model):
        from .._backend import import_keras

        import_keras().utils.set_random_seed(values["seed"])
        return custom.build_user_model(cfg.model, num_classes=num_classes, **values)
    return zoo.build_model(cfg.model, num_classes=num_classes, **values)


def check_model(model: str) -> None:
    """A zoo name, or an existing 'file.py:function' (the file is not imported here)."""
    from pathlib import Path

    if custom.is_user_model(model):
        path = model.rsplit(":", 1)[0]
        if not Path(path).is_file():
            raise TrainingError(f"user model file not found: {path} (from --model {model})")
        return
    if ":" in model:
        raise TrainingError(f"a user model is 'path/to/file.py:function', got '{model}'")
    zoo.check_model(model)


class Feeder:
    """Turns raw data rows into what `fit` takes for one network (input order = the model's own)."""

    def __init__(self, cfg: TrainConfig, net: Any):
        self.model = cfg.model
        self.user = custom.is_user_model(cfg.model)
        self.names = [t.name for t in net.inputs]
        self.output_names = list(getattr(net, "output_names", []) or [])
        self.input_shapes = [tuple(t.shape[1:]) for t in net.inputs]

    def x(self, rows: np.ndarray) -> Any:
        if self.user:
            if len(self.names) != 1:
                raise TrainingError(f"{self.model} has {len(self.names)} inputs; user models trained by "
                                    "modelkit take one input")
            return _data.reshape_rows(rows, self.input_shapes[0], self.model)
        feed = _data.model_inputs(self.model, rows)
        arrays = [feed[n] for n in self.names]
        return arrays if len(arrays) > 1 else arrays[0]

    def y(self, rows: np.ndarray, labels: np.ndarray) -> Any:
        if self.user:
            return labels
        y = _data.model_targets(self.model, rows, labels)
        return [y[n] for n in self.output_names] if isinstance(y, dict) else y


def validation_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded indices (fit, validation) of the training split, stratified when labels are classes."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    stratify = labels if labels.dtype.kind in "iu" and np.bincount(labels).min(initial=2) >= 2 else None
    try:
        fit_idx, val_idx = train_test_split(idx, test_size=VALIDATION_FRACTION, random_state=seed,
                                            stratify=stratify)
    except ValueError:  # a class too rare to stratify
        fit_idx, val_idx = train_test_split(idx, test_size=VALIDATION_FRACTION, random_state=seed)
    return np.sort(fit_idx), np.sort(val_idx)


def optimizer(keras: Any, cfg: TrainConfig, steps_per_epoch: int, name: str | None = None,
              learning_rate: float | None = None) -> Any:
    name = name or cfg.optimizer
    lr = schedule(keras, cfg, steps_per_epoch, learning_rate or cfg.learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=cfg.momentum)
    raise TrainingError(f"unknown optimizer '{name}'; valid optimizers: {', '.join(OPTIMIZERS)}")


def schedule(keras: Any, cfg: TrainConfig, steps_per_epoch: int, lr: float) -> Any:
    """A float (constant) or a Keras LearningRateSchedule, stepped per batch."""
    if cfg.schedule == "constant":
        return lr
    if cfg.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps_per_epoch * cfg.epochs))
    if cfg.schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(lr, decay_steps=max(1, steps_per_epoch),
                                                           decay_rate=cfg.decay_rate)
    raise TrainingError(f"unknown schedule '{cfg.schedule}'")


def loss_and_metrics(keras: Any, cfg: TrainConfig) -> dict[str, Any]:
    task = task_of(cfg)
    if cfg.model == "multi_io":
        first = custom.resolve_loss(keras, cfg.loss) if cfg.loss else "sparse_categorical_crossentropy"
        return {"loss": [first, "mse"], "loss_weights": [1.0, 1.0], "metrics": [["accuracy"], []]}
    if task == "reconstruction":
        return {"loss": custom.resolve_loss(keras, cfg.loss) if cfg.loss else "mse", "metrics": ["mae"]}
    loss = custom.resolve_loss(keras, cfg.loss) if cfg.loss else "sparse_categorical_crossentropy"
    return {"loss": loss, "metrics": ["accuracy"]}


def steps(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def accuracy(keras: Any, net: Any, x: Any, labels: np.ndarray, batch: int = 256) -> float:
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


def test_metrics(keras: Any, net: Any, feeder: Feeder, ds: Any, task: str) -> dict[str, float]:
    """Metrics on the held-out test split: Keras' evaluate (loss and compiled metrics), plus top-1
    accuracy for classifiers (computed directly from the probabilities)."""
    x, y = feeder.x(ds.x_test), feeder.y(ds.x_test, ds.y_test)
    logs = net.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)
    out = {f"test_{k}": float(v) for k, v in logs.items()}
    if task == "classification" or (task == "custom" and ds.y_test.dtype.kind in "iu"
                                     and _looks_like_probs(net)):
        out["test_accuracy"] = accuracy(keras, net, x, ds.y_test)
    return out


test_metrics.__test__ = False  # not a pytest test, despite the name


def _looks_like_probs(net: Any) -> bool:
    shape = net.outputs[0].shape
    return len(shape) == 2 and shape[-1] is not None and shape[-1] > 1
