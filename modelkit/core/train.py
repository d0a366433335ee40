"""Training: train a zoo model (or the user's own) on shipped or user data, save the .keras atomically,
write its manifest. Settings come from keyword arguments, a TOML file or both (modelkit.core.config).

A Keras backend is fixed per process. `train` runs in this process when Keras is not imported yet or is
imported with the wanted backend; otherwise it runs in a child process with that backend
(modelkit._child), so one Python session can train under TensorFlow, torch and JAX. Hyperparameter
search (`tune`) is in modelkit.core.search, multi-device and multi-process training in
modelkit.core.distribute.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic, _child, _progress, manifest
from .._backend import import_keras, loaded_backend, requested_backend
from ..errors import TrainingError
from ..keras_io import custom
from . import callbacks as _cb
from . import config as _config
from . import data as _data
from . import interrupt, recipe
from .config import OPTIMIZERS, TrainConfig

__all__ = ["train", "OPTIMIZERS", "check_optimizer", "resolve_config", "VALIDATION_FRACTION"]
VALIDATION_FRACTION = recipe.VALIDATION_FRACTION
# settings a resumed run must share with the run that wrote the checkpoint
RESUME_KEYS = ("model", "data", "seed", "batch_size")


def check_optimizer(name: str) -> str:
    """Return `name` if it is a known optimizer, else raise TrainingError listing the valid ones."""
    if name not in OPTIMIZERS:
        raise TrainingError(f"unknown optimizer '{name}'; valid optimizers: {', '.join(OPTIMIZERS)}")
    return name


def resolve_config(config: str | os.PathLike | TrainConfig | dict[str, Any] | None = None,
                   **overrides: Any) -> TrainConfig:
    """A checked TrainConfig: a TOML file, a mapping or a TrainConfig, with keyword overrides on top.

    Fills in what depends on other settings: the backend (KERAS_BACKEND, else tensorflow), absolute
    output paths, the checkpoint folder (`<out>.ckpt`) and the study folder (`<out>.study`).
    """
    if isinstance(config, TrainConfig):
        cfg = _config.make({**config.to_dict(), **overrides})
    elif isinstance(config, dict):
        cfg = _config.make({**config, **overrides})
    elif config is not None:
        cfg = _config.from_file(config, overrides)
    else:
        cfg = _config.make(overrides)
    out = Path(cfg.out).resolve()
    return dataclasses.replace(
        cfg, backend=cfg.backend or requested_backend(), out=str(out),
        checkpoint_dir=cfg.checkpoint_dir and str(Path(cfg.checkpoint_dir).resolve()),
        study_dir=str(Path(cfg.study_dir or f"{out}.study").resolve()) if cfg.tune else cfg.study_dir)


def check_inputs(cfg: TrainConfig) -> None:
    """Everything that can be checked before Keras is imported: names, files, the output path."""
    recipe.check_model(cfg.model)
    _data.check_data(cfg.data)
    for spec in cfg.imports:
        if spec.endswith(".py") and not Path(spec).is_file():
            raise TrainingError(f"no such Python file to import: {spec}")
    _atomic.check_writable(Path(cfg.out), cfg.force)


def train(config: str | os.PathLike | TrainConfig | dict[str, Any] | None = None, *,
          callbacks: list[Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Train as configured (see TrainConfig for every key); return a JSON-able summary.

    `config` is a TOML file, a mapping or a TrainConfig; keyword arguments override it. The summary
    holds test_accuracy (classifiers) and test_metrics on the held-out test split, train_seconds,
    backend, path, manifest path, parameter count and the per-epoch history. Arguments are checked,
    and an existing `out` refused (ArtifactExistsError) unless force, before anything heavy is imported.
    `callbacks` (extra Keras callbacks) apply to in-process training only.
    """
    cfg = resolve_config(config, **overrides)
    check_inputs(cfg)
    if cfg.tune:
        from .search import search

        return search(cfg)
    if cfg.workers > 1 or cfg.devices > 1:
        from .distribute import run_distributed

        return run_distributed(cfg)
    if loaded_backend() in (None, cfg.backend):
        return fit(cfg, callbacks)
    if callbacks:
        raise TrainingError(f"extra callbacks need training in this process, but Keras is loaded here with "
                            f"'{loaded_backend()}' and the run asks for '{cfg.backend}'")
    # Ctrl-C: the child saves its checkpoint first
    return _child.run("modelkit.core.train:_fit_child", {"config": cfg.to_dict()}, backend=cfg.backend,
                      interrupt_grace=60.0, error=TrainingError, what="training")


def _fit_child(config: dict[str, Any]) -> dict[str, Any]:
    return fit(TrainConfig(**config))


def _settings(cfg: TrainConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in (*RESUME_KEYS, "optimizer", "learning_rate", "schedule", "epochs")}


def _start(keras: Any, cfg: TrainConfig, ckpt: _cb.Checkpoints, num_classes: int) -> tuple[Any, int, dict]:
    """(network, initial epoch, earlier history): a fresh compiled network, or the resume checkpoint."""
    if not cfg.resume:
        return None, 0, {}
    state = ckpt.state()
    if state is None:
        raise TrainingError(f"nothing to resume: no checkpoint in {ckpt.folder} (it is written at the end of "
                            "each epoch and on Ctrl-C, and removed when a run completes)")
    before = state.get("settings", {})
    changed = [k for k in RESUME_KEYS if k in before and before[k] != getattr(cfg, k)]
    if changed:
        raise TrainingError(f"cannot resume: {', '.join(f'{k} was {before[k]!r}' for k in changed)} in the "
                            f"checkpoint in {ckpt.folder}")
    # safe_mode stays on: registered custom objects load, Lambda layers are refused
    net = keras.saving.load_model(ckpt.last, compile=True, safe_mode=True)
    return net, int(state["epoch"]), state.get("history", {})


def fit(cfg: TrainConfig, extra_callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Train in this process (Keras gets cfg.backend)."""
    from ..keras_io.files import keras_signature

    keras = import_keras(cfg.backend)
    # the user's model file too: its custom layers must be registered before a resume checkpoint loads
    imports = [*cfg.imports, *([cfg.model.rsplit(":", 1)[0]] if custom.is_user_model(cfg.model) else [])]
    custom.import_all(imports)
    keras.utils.set_random_seed(cfg.seed)
    ds = _data.load(cfg.data, seed=cfg.seed, label_column=cfg.label_column)
    task = recipe.task_of(cfg)
    num_classes = ds.num_classes if ds.y_train.dtype.kind in "iu" else 1
    explicit_ckpt = cfg.checkpoint_dir is not None
    ckpt = _cb.Checkpoints(cfg.checkpoint_dir or f"{cfg.out}.ckpt")
    net, initial_epoch, before = _start(keras, cfg, ckpt, num_classes)
    fit_idx, val_idx = recipe.validation_split(ds.y_train, cfg.seed)
    steps = recipe.steps(len(fit_idx), cfg.batch_size)
    if net is None:
        net = recipe.build_net(cfg, num_classes)
        net.compile(optimizer=recipe.optimizer(keras, cfg, steps), **recipe.loss_and_metrics(keras, cfg))
    feeder = recipe.Feeder(cfg, net)
    x_fit, x_val = ds.x_train[fit_idx], ds.x_train[val_idx]
    y_fit, y_val = ds.y_train[fit_idx], ds.y_train[val_idx]
    recorder = _cb.history_recorder(keras, ckpt, before, _settings(cfg), cfg.history_json)
    recorder.epochs_done = initial_epoch
    cbs = [recorder, *_cb.standard(keras, ckpt if explicit_ckpt else None, cfg.patience, cfg.history_csv, before)]
    # a bar over the epochs on a terminal, with the epoch lines above it; the lines alone elsewhere
    with _progress.steps(cfg.epochs, "training", done=initial_epoch, show=cfg.verbose) as bar:
        if cfg.verbose:
            cbs.append(_cb.epoch_printer(keras, cfg.epochs, bar=bar))
        cbs.extend(extra_callbacks or [])
        t0 = time.perf_counter()
        try:  # Ctrl-C: taken at the next batch or epoch boundary (modelkit.core.interrupt)
            with interrupt.deferred(keras) as stop_on_ctrl_c:
                if initial_epoch < cfg.epochs:
                    net.fit(feeder.x(x_fit), feeder.y(x_fit, y_fit),
                            validation_data=(feeder.x(x_val), feeder.y(x_val, y_val)), epochs=cfg.epochs,
                            initial_epoch=initial_epoch, batch_size=cfg.batch_size, shuffle=True, verbose=0,
                            callbacks=[*cbs, stop_on_ctrl_c])
        except KeyboardInterrupt:
            ckpt.save(net, recorder.epochs_done, recorder.history(), _settings(cfg), interrupted=True)
            raise TrainingError(f"interrupted after {recorder.epochs_done} of {cfg.epochs} epochs; checkpoint saved "
                                f"in {ckpt.folder}; continue with --resume (resume=True)") from None
    train_seconds = time.perf_counter() - t0
    history = recorder.history()
    if not history.get("loss") or not np.isfinite(history["loss"][-1]):
        if explicit_ckpt:
            ckpt.finish()
        else:
            _atomic.remove_path(ckpt.folder)
        raise TrainingError(f"training diverged (loss {(history.get('loss') or [float('nan')])[-1]}); lower the "
                            f"learning rate (now {cfg.learning_rate})")
    metrics = recipe.test_metrics(keras, net, feeder, ds, task)
    with _atomic.atomic_path(cfg.out, cfg.force) as tmp:
        net.save(tmp)
    ckpt.finish()
    if not explicit_ckpt:
        _atomic.remove_path(ckpt.folder)
    training = {"model": cfg.model, "data": cfg.data, "backend": cfg.backend, "epochs": cfg.epochs,
                "epochs_run": len(history["loss"]), "resumed_from_epoch": initial_epoch or None,
                "optimizer": cfg.optimizer, "learning_rate": cfg.learning_rate, "schedule": cfg.schedule,
                "momentum": cfg.momentum if cfg.optimizer == "sgd" else None, "l1": cfg.l1, "l2": cfg.l2,
                "dropout": cfg.dropout, "batch_norm": cfg.batch_norm, "units": cfg.units, "loss": cfg.loss,
                "batch_size": cfg.batch_size, "seed": cfg.seed, "task": task,
                "test_accuracy": metrics.get("test_accuracy"), "test_metrics": metrics,
                "train_seconds": round(train_seconds, 3), "params": int(net.count_params()),
                "keras_version": keras.__version__, "imports": imports,
                "custom_objects": custom.custom_objects(keras, net),
                "history": history}
    mpath = manifest.write(cfg.out, manifest.Manifest(format="keras", signature=keras_signature(net).to_dict(),
                                                      training=training))
    summary = {**training, "path": str(cfg.out), "manifest": str(mpath)}
    if cfg.verbose:
        _print_result(metrics, len(ds.y_test), imports)
    return summary


def _print_result(metrics: dict[str, float], n: int, imports: list[str]) -> None:
    if metrics.get("test_accuracy") is not None:
        print(f"test accuracy {metrics['test_accuracy']:.4f} on {n} held-out images", file=sys.stderr, flush=True)
    others = "  ".join(f"{k.removeprefix('test_')} {v:.4f}" for k, v in metrics.items() if k != "test_accuracy")
    print(f"test metrics: {others}", file=sys.stderr, flush=True)
    if imports:
        flags = " ".join(f"--import {i}" for i in imports)
        print(f"custom code: convert or load this model with {flags} (or {custom.ENV_IMPORTS}={','.join(imports)})",
              file=sys.stderr, flush=True)
