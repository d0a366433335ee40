"""Training callbacks: progress lines, early stopping, best-model and resume checkpoints, history files.

Resume checkpoints live in a folder (default `<out>.ckpt/`): `last.keras` is the whole model with its
optimizer state (saved at the end of every epoch, and on Ctrl-C), `state.json` the number of completed
epochs and the history so far, `best.keras` the model with the best val_loss. A finished run removes
last.keras and state.json (nothing left to resume) and keeps best.keras.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from .. import _atomic
from .._text import progress
from ..errors import TrainingError

STATE = "state.json"
LAST = "last.keras"
BEST = "best.keras"


def metric(logs: dict[str, Any], name: str) -> float | None:
    """A metric from Keras logs; multi-output models prefix it with the output name ('probs_accuracy')."""
    for key in (name, name.replace("accuracy", "probs_accuracy")):
        if key in logs:
            return float(logs[key])
    return None


def epoch_printer(keras: Any, epochs: int, prefix: str = "", bar: Any = None) -> Any:
    """A Keras callback printing one line per epoch to stderr (stdout stays free for results); with `bar`
    (modelkit._progress.steps), each line is also an epoch done on its bar."""

    class EpochPrinter(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            parts = [f"{prefix}epoch {epoch + 1}/{epochs}", f"loss {float(logs.get('loss', math.nan)):.4f}"]
            for label, key in (("accuracy", "accuracy"), ("val accuracy", "val_accuracy"), ("val loss", "val_loss")):
                value = metric(logs, key)
                if value is not None:
                    parts.append(f"{label} {value:.4f}")
            parts.append(f"{time.perf_counter() - self._t0:.1f} s")
            if bar is not None:
                bar.advance("  ".join(parts))
            else:
                progress("  ".join(parts))

    return EpochPrinter()


def save_model(model: Any, dest: Path) -> None:
    """Save a .keras file atomically, replacing an older one."""
    with _atomic.atomic_path(dest, force=True) as tmp:
        model.save(tmp)


class Checkpoints:
    """The resume folder of one training run."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @property
    def last(self) -> Path:
        return self.folder / LAST

    @property
    def best(self) -> Path:
        return self.folder / BEST

    def state(self) -> dict[str, Any] | None:
        p = self.folder / STATE
        if not p.is_file() or not self.last.is_file():
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TrainingError(f"{p}: unreadable resume state ({exc}); delete {self.folder} to start over") from exc

    def save(self, model: Any, epochs_done: int, history: dict[str, list[float]], settings: dict[str, Any],
             interrupted: bool = False) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        save_model(model, self.last)
        state = {"epoch": epochs_done, "history": history, "settings": settings, "interrupted": interrupted}
        _atomic.write_text(self.folder / STATE, json.dumps(state, indent=2) + "\n")

    def finish(self) -> None:
        """Training completed: nothing left to resume."""
        for p in (self.folder / STATE, self.last):
            _atomic.remove_path(p)


def merge_history(before: dict[str, list[float]], logs_by_epoch: dict[str, list[float]]) -> dict[str, list[float]]:
    keys = list(dict.fromkeys([*before, *logs_by_epoch]))
    return {k: [*before.get(k, []), *logs_by_epoch.get(k, [])] for k in keys}


def history_recorder(keras: Any, ckpt: Checkpoints | None, before: dict[str, list[float]],
                     settings: dict[str, Any], json_path: str | None) -> Any:
    """Records the per-epoch logs (after earlier runs' history, when resumed); at each epoch end saves
    the resume checkpoint and rewrites the JSON history file."""

    class HistoryRecorder(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epochs_done = 0
            self.logs: dict[str, list[float]] = {}

        def history(self) -> dict[str, list[float]]:
            return merge_history(before, self.logs)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            for k, v in (logs or {}).items():
                if k == "learning_rate":
                    continue
                self.logs.setdefault(k, []).append(float(v))
            self.epochs_done = epoch + 1
            if ckpt is not None:
                ckpt.save(self.model, self.epochs_done, self.history(), settings)
            if json_path:
                write_history_json(json_path, self.history())

    return HistoryRecorder()


def write_history_json(path: str | Path, history: dict[str, list[float]]) -> None:
    epochs = max((len(v) for v in history.values()), default=0)
    rows = [{"epoch": i + 1, **{k: v[i] for k, v in history.items() if i < len(v)}} for i in range(epochs)]
    _atomic.write_text(path, json.dumps({"history": history, "epochs": rows}, indent=2) + "\n")


def standard(keras: Any, ckpt: Checkpoints | None, patience: int, history_csv: str | None,
             before: dict[str, list[float]], monitor: str = "val_loss") -> list[Any]:
    """Early stopping (patience > 0), the best-model checkpoint, and the CSV history file.

    When resumed (`before` holds the earlier epochs), best.keras is replaced only by a model better
    than the best one of the earlier epochs, and the CSV file is appended to.
    """
    out: list[Any] = []
    if patience > 0:
        out.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True))
    if ckpt is not None:
        ckpt.folder.mkdir(parents=True, exist_ok=True)
        seen = [v for v in before.get(monitor, []) if math.isfinite(v)]
        out.append(keras.callbacks.ModelCheckpoint(str(ckpt.best), monitor=monitor, save_best_only=True,
                                                   initial_value_threshold=min(seen) if seen else None))
    if history_csv:
        Path(history_csv).parent.mkdir(parents=True, exist_ok=True)
        out.append(keras.callbacks.CSVLogger(str(history_csv), append=bool(before)))
    return out
