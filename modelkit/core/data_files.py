"""Users' own data: a .npz file (x, y, optionally x_test and y_test) or a .csv file with a label column.

.npz files are read with allow_pickle=False (never unpickle a user's file). Without a test split,
20 % of the rows are held out, stratified by label and seeded, like the digits split.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import TrainingError

SUFFIXES = (".npz", ".csv")
TEST_SIZE = 0.2


def is_data_file(name: str) -> bool:
    return Path(name).suffix.lower() in SUFFIXES


def load_file(path: str, seed: int = 0, label_column: str = "label"):  # -> data.Dataset
    p = Path(path)
    if not p.is_file():
        raise TrainingError(f"data file not found: {p}")
    if p.suffix.lower() == ".npz":
        x, y, x_test, y_test = _read_npz(p)
    else:
        x, y = _read_csv(p, label_column)
        x_test = y_test = None
    if x_test is None:
        x, x_test, y, y_test = _split(x, y, seed)
    return _dataset(x, y, x_test, y_test, p)


def _read_npz(p: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{p}: not a readable .npz file without pickles ({exc})") from exc
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise TrainingError(f"{p}: a .npz data file needs arrays 'x' and 'y' (and optionally 'x_test', "
                            f"'y_test'); it has {', '.join(sorted(arrays)) or 'none'}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise TrainingError(f"{p}: give both 'x_test' and 'y_test', or neither")
    return arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test")


def _read_csv(p: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"{p}: not a readable .csv file ({exc})") from exc
    if len(rows) < 2:
        raise TrainingError(f"{p}: a .csv data file needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise TrainingError(f"{p}: no label column '{label_column}' (columns: {', '.join(header)}); "
                            "set label_column / --label-column")
    col = header.index(label_column)
    try:
        table = np.array([[float(v) for v in r] for r in rows[1:] if r], dtype=np.float64)
    except ValueError as exc:
        raise TrainingError(f"{p}: every value must be a number ({exc})") from exc
    if table.ndim != 2 or table.shape[1] != len(header):
        raise TrainingError(f"{p}: every row must have {len(header)} values")
    y = table[:, col]
    x = np.delete(table, col, axis=1).astype(np.float32)
    return x, y


def _labels(y: np.ndarray, p: Path) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind in "iu":
        if y.min() < 0:
            raise TrainingError(f"{p}: class labels must be >= 0, got {y.min()}")
        return y.astype(np.int64)
    return y.astype(np.float32)  # regression targets (with a loss that fits them)


def _split(x: np.ndarray, y: np.ndarray, seed: int):
    from sklearn.model_selection import train_test_split

    y_int = np.asarray(y)
    classes, counts = np.unique(y_int, return_counts=True) if y_int.dtype.kind in "iuf" else (None, None)
    stratify = y_int if classes is not None and len(classes) < len(y_int) // 2 and counts.min() >= 2 else None
    return train_test_split(x, y, test_size=TEST_SIZE, random_state=seed, stratify=stratify)


def _dataset(x, y, x_test, y_test, p: Path):
    from .data import Dataset

    x, x_test = np.asarray(x), np.asarray(x_test)
    if len(x) != len(y) or len(x_test) != len(y_test):
        raise TrainingError(f"{p}: x and y (and x_test and y_test) must have the same number of rows")
    if x.shape[1:] != x_test.shape[1:]:
        raise TrainingError(f"{p}: x has rows of shape {x.shape[1:]} but x_test {x_test.shape[1:]}")
    if x.dtype.kind not in "fiu" or len(x) < 2:
        raise TrainingError(f"{p}: x must be numbers, with at least 2 rows")
    return Dataset(np.ascontiguousarray(x, dtype=np.float32), _labels(y, p),
                   np.ascontiguousarray(x_test, dtype=np.float32), _labels(y_test, p))
