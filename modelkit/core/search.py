"""Hyperparameter search with KerasTuner over the [search] table of a training config.

    [search]
    learning_rate = {min = 1e-4, max = 1e-2, log = true}   # a float range (log-uniform)
    units = [32, 64, 128]                                  # a choice
    dropout = {min = 0.0, max = 0.4, step = 0.1}           # a stepped range
    optimizer = ["adam", "sgd"]

Every searchable key is a training-config key (SEARCHABLE). The study lives in a folder (default
`<out>.study/`): running again with the same folder continues it (trials counts the study's total).
Bad trials stop early: each trial's epochs are cut when its validation score is worse than the
median of the finished trials at the same epoch (the median-stopping rule), and early stopping
(patience) applies within trials. The best trial's model is saved as the .keras output, with its
manifest; results.csv, results.json and results.png (score per trial) go into the study folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic, _child, manifest
from .._backend import import_keras, loaded_backend
from .._progress import steps
from .._require import require
from ..errors import TrainingError
from ..keras_io import custom
from . import data as _data
from . import interrupt, recipe
from .config import OPTIMIZERS, SCHEDULES, TrainConfig, parse_budget

SEARCHABLE = ("learning_rate", "units", "dropout", "l1", "l2", "optimizer", "batch_size", "momentum", "schedule",
              "batch_norm")
DEFAULT_TRIALS = 10
CURVES_FILE = "curves.json"  # per trial: the objective after each epoch, and where it was pruned


def parse_space(space: dict[str, Any]) -> dict[str, Any]:
    """Check the [search] table: keys among SEARCHABLE; a list (choice) or {min, max[, log, step]}."""
    if not space:
        raise TrainingError("a search needs a [search] table in the config, e.g. "
                            "learning_rate = {min = 1e-4, max = 1e-2, log = true}")
    for key, spec in space.items():
        if key not in SEARCHABLE:
            raise TrainingError(f"unknown search key '{key}'; searchable keys: {', '.join(SEARCHABLE)}")
        if isinstance(spec, list):
            if not spec:
                raise TrainingError(f"search key '{key}': the list of choices is empty")
            choices = OPTIMIZERS if key == "optimizer" else SCHEDULES if key == "schedule" else None
            bad = [c for c in spec if choices is not None and c not in choices]
            if bad:
                raise TrainingError(f"search key '{key}': unknown {', '.join(map(str, bad))}; valid: "
                                    f"{', '.join(choices or [])}")
        elif isinstance(spec, dict):
            extra = set(spec) - {"min", "max", "log", "step"}
            if extra or "min" not in spec or "max" not in spec:
                raise TrainingError(f"search key '{key}': a range is {{min, max[, log, step]}}, got {spec}")
            if not spec["min"] < spec["max"] or (spec.get("log") and spec["min"] <= 0):
                raise TrainingError(f"search key '{key}': need 0 < min < max for log ranges, min < max otherwise")
        else:
            raise TrainingError(f"search key '{key}': give a list of choices or a {{min, max}} table, got {spec!r}")
    return space


def _define(hp: Any, key: str, spec: Any) -> Any:
    if isinstance(spec, list):
        return hp.Choice(key, spec)
    lo, hi, log, step = spec["min"], spec["max"], bool(spec.get("log", False)), spec.get("step")
    sampling = "log" if log else "linear"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) and key in ("units", "batch_size"):
        return hp.Int(key, lo, hi, step=step, sampling=sampling)
    return hp.Float(key, float(lo), float(hi), step=step, sampling=sampling)


def search(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or continue) the study; return the summary of the best model, saved at cfg.out."""
    parse_space(cfg.search)
    if cfg.budget is not None:
        parse_budget(cfg.budget)
    if loaded_backend() in (None, cfg.backend):
        return _search_here(cfg.to_dict())
    # Ctrl-C: finished trials stay in the tuner's folder
    return _child.run("modelkit.core.search:_search_here", {"config": cfg.to_dict()}, backend=cfg.backend,
                      interrupt_grace=60.0, error=TrainingError, what="the search")


def _search_here(config: dict[str, Any]) -> dict[str, Any]:
    cfg = TrainConfig(**config) if isinstance(config, dict) else config
    keras = import_keras(cfg.backend)
    kt = require("keras_tuner", "tune", "KerasTuner (hyperparameter search)")
    from ..keras_io.files import keras_signature

    custom.import_all(cfg.imports)
    keras.utils.set_random_seed(cfg.seed)
    ds = _data.load(cfg.data, seed=cfg.seed, label_column=cfg.label_column)
    task = recipe.task_of(cfg)
    num_classes = ds.num_classes if ds.y_train.dtype.kind in "iu" else 1
    fit_idx, val_idx = recipe.validation_split(ds.y_train, cfg.seed)
    feeder = recipe.Feeder(cfg, recipe.build_net(cfg, num_classes))
    objective = kt.Objective("val_accuracy", "max") if task == "classification" and cfg.model != "multi_io" \
        else kt.Objective("val_loss", "min")
    study = Path(cfg.study_dir)
    study.mkdir(parents=True, exist_ok=True)
    curves: dict[str, dict[str, Any]] = _read_json(study / CURVES_FILE, {})

    stops: list[Any] = []  # the Ctrl-C callback of modelkit.core.interrupt, passed to every trial's fit

    class HyperModel(kt.HyperModel):
        def build(self, hp: Any) -> Any:
            values = {k: _define(hp, k, spec) for k, spec in cfg.search.items()}
            trial_cfg = dataclasses.replace(cfg, **values)
            net = recipe.build_net(trial_cfg, num_classes)
            steps = recipe.steps(len(fit_idx), trial_cfg.batch_size)
            net.compile(optimizer=recipe.optimizer(keras, trial_cfg, steps),
                        **recipe.loss_and_metrics(keras, trial_cfg))
            return net

        def fit(self, hp: Any, model: Any, *args: Any, callbacks: Any = None, **kwargs: Any) -> Any:
            trial = next(iter(tuner.oracle.ongoing_trials.values()))
            cbs = [*(callbacks or []), _median_stopper(keras, tuner, trial.trial_id, objective, curves, study),
                   *stops]
            if cfg.patience > 0:
                cbs.append(keras.callbacks.EarlyStopping(monitor=objective.name, mode=objective.direction,
                                                         patience=cfg.patience))
            batch = hp.values.get("batch_size", cfg.batch_size)
            return model.fit(*args, batch_size=int(batch), callbacks=cbs, **kwargs)

    algorithm = kt.BayesianOptimization if cfg.tuner == "bayesian" else kt.RandomSearch
    tuner = algorithm(HyperModel(), objective=objective, max_trials=cfg.trials or DEFAULT_TRIALS, seed=cfg.seed,
                      directory=str(study), project_name="keras_tuner", overwrite=False)
    x_fit, x_val = ds.x_train[fit_idx], ds.x_train[val_idx]
    y_fit, y_val = ds.y_train[fit_idx], ds.y_train[val_idx]
    fit_args = dict(x=feeder.x(x_fit), y=feeder.y(x_fit, y_fit), epochs=cfg.epochs, shuffle=True, verbose=0,
                    validation_data=(feeder.x(x_val), feeder.y(x_val, y_val)))
    with contextlib.redirect_stdout(sys.stderr):  # KerasTuner prints; stdout is for results
        ran = _run_interruptible(keras, tuner, cfg, fit_args, stops, study)
        net = tuner.get_best_models(1)[0]
    rows = results_table(tuner, curves)
    done = [r for r in rows if r["status"] == "COMPLETED"]
    if not done:
        failed = [t for t in tuner.oracle.trials.values() if t.message]
        raise TrainingError("every search trial failed" + (f"; the last said:\n{failed[-1].message}" if failed else ""))
    _write_results(study, rows, objective)
    best_trial = tuner.oracle.get_best_trials(1)[0]
    best_values = dict(best_trial.hyperparameters.values)
    best_cfg = dataclasses.replace(cfg, **best_values)
    metrics = recipe.test_metrics(keras, net, feeder, ds, task)
    with _atomic.atomic_path(cfg.out, cfg.force) as tmp:
        net.save(tmp)
    summary_search = {"trials": len(rows), "trials_run_now": ran, "best_trial": best_trial.trial_id,
                      "best_score": best_trial.score, "objective": objective.name, "direction": objective.direction,
                      "best_hyperparameters": best_values, "space": cfg.search, "study_dir": str(study),
                      "algorithm": cfg.tuner, "results": rows}
    training = {"model": cfg.model, "data": cfg.data, "backend": cfg.backend, "epochs": cfg.epochs,
                **{k: getattr(best_cfg, k) for k in SEARCHABLE}, "seed": cfg.seed, "task": task,
                "test_accuracy": metrics.get("test_accuracy"), "test_metrics": metrics,
                "params": int(net.count_params()), "keras_version": keras.__version__, "search": summary_search}
    mpath = manifest.write(cfg.out, manifest.Manifest(format="keras", signature=keras_signature(net).to_dict(),
                                                      training=training))
    if cfg.verbose:
        print(format_table(rows, objective.name), file=sys.stderr, flush=True)
        print(f"best trial {best_trial.trial_id}: {objective.name} {best_trial.score:.4f} with {best_values}; "
              f"test metrics {metrics}", file=sys.stderr, flush=True)
    return {**training, "path": cfg.out, "manifest": str(mpath)}


def _run_interruptible(keras: Any, tuner: Any, cfg: TrainConfig, fit_args: dict[str, Any], stops: list[Any],
                       study: Path) -> int:
    """_run_trials with Ctrl-C taken at a batch or epoch boundary (modelkit.core.interrupt) and said as a
    TrainingError: the finished trials stay in the study, and the same command continues it."""
    try:
        with interrupt.deferred(keras) as stop_on_ctrl_c:
            stops.append(stop_on_ctrl_c)
            return _run_trials(tuner, cfg, fit_args)
    except KeyboardInterrupt:
        done = sum(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
        raise TrainingError(f"search interrupted; its {done} finished trial(s) are kept in {study}; the same "
                            "command continues it") from None


def _run_trials(tuner: Any, cfg: TrainConfig, fit_args: dict[str, Any]) -> int:
    """Run trials until the study has cfg.trials of them or the time budget is spent; return how many ran.

    One `search` call per trial (max_trials raised by one each time), so the budget is checked
    between trials: a running trial always finishes.
    """
    target = cfg.trials or (DEFAULT_TRIALS if cfg.budget is None else 10**6)
    deadline = time.monotonic() + parse_budget(cfg.budget) if cfg.budget else math.inf
    ran = 0
    known = target if target < 10**6 else None
    # a bar over the trials on a terminal (KerasTuner's prints, sent to stderr, go above it), else the lines alone
    with steps(known, "search", done=len(tuner.oracle.trials), show=cfg.verbose) as bar, \
            contextlib.redirect_stdout(sys.stderr):
        while len(tuner.oracle.trials) < target and time.monotonic() < deadline:
            before = len(tuner.oracle.trials)
            tuner.oracle.max_trials = before + 1
            bar.note(f"trial {before + 1}/{known or '?'} ...")
            tuner.search(**fit_args)
            if len(tuner.oracle.trials) == before:  # the space is exhausted
                break
            ran += 1
            bar.advance()
    return ran


def _median_stopper(keras: Any, tuner: Any, trial_id: str, objective: Any, curves: dict[str, dict[str, Any]],
                    study: Path) -> Any:
    """Records the trial's objective after each epoch (in curves.json), and stops the trial at an epoch
    where it is worse than the median of the finished trials at that epoch (needs 2 finished trials)."""
    sign = 1.0 if objective.direction == "max" else -1.0
    record: dict[str, Any] = {"curve": [], "pruned_at_epoch": None}
    curves[trial_id] = record

    class MedianStopper(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            value = (logs or {}).get(objective.name)
            if value is None:
                return
            record["curve"].append(float(value))
            others = _scores_at(tuner, trial_id, curves, epoch)
            last_epoch = epoch == self.params.get("epochs", 0) - 1
            if len(others) >= 2 and not last_epoch and sign * float(value) < sign * float(np.median(others)):
                self.model.stop_training = True
                record["pruned_at_epoch"] = epoch + 1
            _atomic.write_text(study / CURVES_FILE, json.dumps(curves, indent=1) + "\n")

    return MedianStopper()


def _scores_at(tuner: Any, trial_id: str, curves: dict[str, dict[str, Any]], epoch: int) -> list[float]:
    """The objective at `epoch` of every finished trial that ran that far (pruned ones did not)."""
    out = []
    for tid, rec in curves.items():
        t = tuner.oracle.trials.get(tid)
        if tid != trial_id and t is not None and t.status == "COMPLETED" and len(rec["curve"]) > epoch:
            out.append(rec["curve"][epoch])
    return out


def results_table(tuner: Any, curves: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for t in sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id):
        rec = curves.get(t.trial_id, {})
        rows.append({"trial": t.trial_id, "status": str(getattr(t.status, "value", t.status)),
                     "score": None if t.score is None else float(t.score), "epochs": len(rec.get("curve", [])),
                     "pruned_at_epoch": rec.get("pruned_at_epoch"), **t.hyperparameters.values})
    return rows


def format_table(rows: list[dict[str, Any]], score_name: str) -> str:
    from .._text import table

    keys = [k for k in rows[0] if k not in ("trial", "status", "score", "epochs", "pruned_at_epoch")] if rows else []
    body = [[r["trial"], r["status"].lower(), "-" if r["score"] is None else f"{r['score']:.4f}", r["epochs"],
             r["pruned_at_epoch"] or "", *(_fmt(r.get(k)) for k in keys)] for r in rows]
    return table(["trial", "status", score_name, "epochs", "pruned", *keys], body)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _write_results(study: Path, rows: list[dict[str, Any]], objective: Any) -> None:
    import csv
    import io

    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    _atomic.write_text(study / "results.csv", buf.getvalue())
    _atomic.write_text(study / "results.json", json.dumps({"objective": objective.name,
                                                           "direction": objective.direction, "trials": rows},
                                                          indent=2) + "\n")
    _plot(study / "results.png", rows, objective)


def _plot(dest: Path, rows: list[dict[str, Any]], objective: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [(i + 1, r["score"]) for i, r in enumerate(rows) if r["score"] is not None]
    if not scored:
        return
    xs, ys = zip(*scored)
    best = np.maximum.accumulate(ys) if objective.direction == "max" else np.minimum.accumulate(ys)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(xs, ys, label="trial")
    ax.plot(xs, best, color="C1", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective.name)
    ax.legend()
    fig.tight_layout()
    with _atomic.atomic_path(dest, force=True) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _read_json(p: Path, default: Any) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainingError(f"{p}: unreadable ({exc})") from exc
