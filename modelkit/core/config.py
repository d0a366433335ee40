"""Training configuration: one set of keys shared by `train(...)`, the CLI flags and a TOML file.

`modelkit train --config train.toml` reads the file with tomllib; flags given on the command line
override the file's values. Keys are the flags' long names with dashes as underscores (`--batch-size`
-> `batch_size`; `--lr` is `learning_rate`, and `lr` is accepted as an alias). The optional
`[search]` table holds the hyperparameter search space (see modelkit.core.search). Relative paths in a
file are resolved against the file's folder, so a config works from any working directory.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import TrainingError

OPTIMIZERS: dict[str, str] = {
    "adam": "Adam",
    "rmsprop": "RMSprop",
    "sgd": "SGD with momentum (0.9 unless `momentum` says otherwise)",
}
SCHEDULES: dict[str, str] = {
    "constant": "the learning rate stays fixed",
    "cosine": "cosine decay from learning_rate to 0 over all training steps",
    "exponential": "learning_rate * decay_rate ** epoch (decays smoothly, per step)",
}
PATH_KEYS = ("data", "out", "checkpoint_dir", "history_csv", "history_json", "study_dir")
ALIASES = {"lr": "learning_rate"}


@dataclass
class TrainConfig:
    """Every training setting. Defaults are the CLI's; `None` means "the model's own default"."""

    model: str = "cnn"  # a zoo name, or 'path/to/file.py:function' returning a keras.Model
    data: str = "digits"  # 'digits', or a .npz (x, y [, x_test, y_test]) / .csv (with a label column)
    label_column: str = "label"  # the label column of a .csv data file
    epochs: int = 5
    batch_size: int = 64
    seed: int = 0
    backend: str | None = None
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9  # sgd only
    schedule: str = "constant"
    decay_rate: float = 0.9  # exponential schedule: factor per epoch
    l1: float = 0.0
    l2: float = 0.0
    dropout: float = 0.0
    batch_norm: bool | None = None  # None: the architecture's default (cnn on, mlp off)
    units: int | None = None  # width of the zoo model (hidden units / filters); None: its default
    loss: str | None = None  # a Keras loss name, or a registered custom loss ('package>name' or 'name')
    imports: list[str] = field(default_factory=list)  # modules / .py files to import (register custom objects)
    patience: int = 0  # early stopping on val_loss; 0 = off
    checkpoint_dir: str | None = None  # default '<out>.ckpt': last.keras, best.keras, state.json
    resume: bool = False
    history_csv: str | None = None
    history_json: str | None = None
    out: str = "model.keras"
    force: bool = False
    verbose: bool = True
    tune: bool = False
    trials: int | None = None
    budget: str | None = None  # '90s', '10m', '1h'
    study_dir: str | None = None
    tuner: str = "random"  # random | bayesian
    devices: int = 1  # data-parallel over this many local devices (JAX)
    workers: int = 1  # local worker processes (JAX distributed over 127.0.0.1)
    timeout: float | None = None  # seconds, for --workers / --devices child processes
    search: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


KEYS: tuple[str, ...] = tuple(f.name for f in fields(TrainConfig))
_DEFAULTS = TrainConfig()


def valid_keys_message() -> str:
    return ", ".join(KEYS)


def _check_type(key: str, value: Any) -> Any:
    """Coerce and check one value against the type of its default."""
    default = getattr(_DEFAULTS, key)
    if value is None:
        return None
    if key in ("backend", "checkpoint_dir", "history_csv", "history_json", "loss", "budget", "study_dir"):
        want: type = str
    elif key in ("batch_norm",):
        want = bool
    elif key in ("units", "trials"):
        want = int
    elif key == "timeout":
        want = float
    else:
        want = type(default)
    if want is str and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if want is list and isinstance(value, tuple):
        value = list(value)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if want is list and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise TrainingError(f"config key '{key}' must be a {want.__name__}, got {value!r}")
    return value


def make(values: dict[str, Any], base_dir: str | os.PathLike | None = None) -> TrainConfig:
    """A checked TrainConfig from a mapping (unknown keys raise TrainingError naming the valid ones).

    With base_dir (a config file's folder), relative paths are resolved against it.
    """
    cfg: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = ALIASES.get(raw_key, raw_key)
        if key not in KEYS:
            raise TrainingError(f"unknown config key '{raw_key}'; valid keys: {valid_keys_message()}")
        if key == "search":
            if not isinstance(value, dict):
                raise TrainingError("config key 'search' must be a table of search-space entries")
            cfg[key] = dict(value)
            continue
        value = _check_type(key, value)
        if base_dir is not None and value is not None:
            value = _resolve(key, value, Path(base_dir))
        cfg[key] = value
    if cfg.get("out") and not Path(cfg["out"]).suffix:  # a folder, as convert's and compile's --out take one
        model = str(cfg.get("model") or TrainConfig.model)
        name = Path(model.rsplit(":", 1)[0]).stem if ":" in model else model
        cfg["out"] = str(Path(cfg["out"]) / f"{name}.keras")
    out = TrainConfig(**cfg)
    validate(out)
    return out


def _resolve(key: str, value: Any, base: Path) -> Any:
    if key == "model" and ":" in value:
        path, func = value.rsplit(":", 1)
        return f"{_abs(path, base)}:{func}"
    if key == "data" and value == "digits":
        return value
    if key in PATH_KEYS:
        return _abs(value, base)
    if key == "imports":
        return [_abs(v, base) if v.endswith(".py") else v for v in value]
    return value


def _abs(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw (unchecked) mapping of a TOML config file; a missing or broken file raises TrainingError."""
    import tomllib

    p = Path(path)
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise TrainingError(f"config file not found: {p}") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TrainingError(f"{p}: not a readable TOML config ({exc})") from exc


def from_file(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The config of a TOML file with `overrides` (e.g. command-line flags; None values ignored) on top."""
    p = Path(path)
    file_cfg = make(load_file(p), base_dir=p.resolve().parent).to_dict()
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    flags = make(given).to_dict()
    merged = {**file_cfg, **{ALIASES.get(k, k): flags[ALIASES.get(k, k)] for k in given}}
    return make(merged)


def validate(cfg: TrainConfig) -> None:
    """Cheap checks of values (names, ranges); nothing heavy is imported."""
    from .._backend import check_backend

    if cfg.backend is not None:
        check_backend(cfg.backend)
    if cfg.optimizer not in OPTIMIZERS:
        raise TrainingError(f"unknown optimizer '{cfg.optimizer}'; valid optimizers: {', '.join(OPTIMIZERS)}")
    if cfg.schedule not in SCHEDULES:
        raise TrainingError(f"unknown schedule '{cfg.schedule}'; valid schedules: {', '.join(SCHEDULES)}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise TrainingError(f"epochs and batch_size must be >= 1, got epochs={cfg.epochs}, "
                            f"batch_size={cfg.batch_size}")
    if not (0 < cfg.learning_rate < math.inf):
        raise TrainingError(f"learning_rate must be a finite number > 0, got {cfg.learning_rate}")
    for key in ("l1", "l2", "momentum"):
        if not 0.0 <= getattr(cfg, key) < math.inf:
            raise TrainingError(f"{key} must be a finite number >= 0, got {getattr(cfg, key)}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise TrainingError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if not 0.0 < cfg.decay_rate <= 1.0:
        raise TrainingError(f"decay_rate must be in (0, 1], got {cfg.decay_rate}")
    if cfg.units is not None and cfg.units < 1:
        raise TrainingError(f"units must be >= 1, got {cfg.units}")
    if cfg.patience < 0:
        raise TrainingError(f"patience must be >= 0, got {cfg.patience}")
    if cfg.devices < 1 or cfg.workers < 1:
        raise TrainingError(f"devices and workers must be >= 1, got {cfg.devices} and {cfg.workers}")
    if cfg.tuner not in ("random", "bayesian"):
        raise TrainingError(f"unknown tuner '{cfg.tuner}'; valid tuners: random, bayesian")
    if cfg.trials is not None and cfg.trials < 1:
        raise TrainingError(f"trials must be >= 1, got {cfg.trials}")
    if cfg.budget is not None:
        parse_budget(cfg.budget)
    if Path(cfg.out).suffix != ".keras":
        raise TrainingError(f"the output must be a .keras file or a folder, got '{cfg.out}'")


def parse_budget(text: str) -> float:
    """'90s' / '10m' / '1.5h' / '600' (seconds) -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise TrainingError(f"budget must look like 90s, 10m or 1h, got '{text}'")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
