"""The user's data for `modelkit optimize`: the split that gates accuracy and the samples int8 calibrates on.

Calibration never sees the rows accuracy is judged on. Their source, in this order: --calibration-data;
else the training split the model's manifest names (a `modelkit train` model), used by convert itself; else a
quarter of --data's rows (at most 200) spread evenly over the file, the rest judging accuracy. The files go
into the model's work folder, named by the data's sha256 (so a rerun with the same data reuses the builds made
with it), each under the user's file name.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from .. import manifest as _manifest
from ..errors import InputError, OptimizeError

CALIBRATION_ROWS = 200
REGRESSION_TARGETS = ("'y' holds a regressor's targets: optimize ranks lossy builds by accuracy, so only the exact "
                      "ones are measured (convert --quantize gates a regressor by its mean absolute error)")
MIN_EVAL_ROWS = 20


def prepare(data: str | os.PathLike | None, model: Path, work: Path,
            calibration_data: str | os.PathLike | None = None) -> dict[str, Any]:
    """{"data": eval .npz or None, "calibration": .npz or None, "data_sha256" (the user's file), "eval_sha256"
    (the rows accuracy is measured on, when split off), "labelled", "unlabelled" (why labels cannot judge), "rows",
    "split"}."""
    if data is None:
        return {"data": None, "calibration": _given(calibration_data), "data_sha256": None, "labelled": False,
                "rows": 0, "split": "no data: inputs generated for timing; lossy precisions not tried"}
    arrays = _read(Path(data))
    rows = _rows(arrays, Path(data))
    sha = _manifest.sha256_of(data)
    labelled, unlabelled = "y" in arrays, None
    if labelled:
        from ..converters.gate import read_labels

        try:  # a regressor's targets: its exact builds are measured, its lossy ones skipped, said why
            if read_labels(np.asarray(arrays["y"]), Path(data)).dtype.kind == "f":
                labelled, unlabelled = False, REGRESSION_TARGETS
        except InputError:
            labelled, unlabelled = False, REGRESSION_TARGETS
    if calibration_data is not None or _trained_on_named_data(model):
        return {"data": str(Path(data).resolve()), "calibration": _given(calibration_data), "data_sha256": sha,
                "labelled": labelled, "unlabelled": unlabelled, "rows": rows,
                "split": "accuracy on every row of --data; calibration on "
                         + ("--calibration-data" if calibration_data is not None else "the model's training split")}
    n_cal = min(CALIBRATION_ROWS, rows // 4)
    if rows - n_cal < MIN_EVAL_ROWS:
        raise OptimizeError(f"{data}: {rows} rows; optimize needs at least {MIN_EVAL_ROWS + n_cal} (a quarter "
                            f"calibrates int8, the rest judges accuracy), or --calibration-data")
    folder = work / f"data-{sha[:16]}"
    name = Path(data).name  # each part keeps the user's file name, so convert's messages name that file
    cal, ev = folder / "calibration" / name, folder / "eval" / name
    cal.parent.mkdir(parents=True, exist_ok=True)
    ev.parent.mkdir(parents=True, exist_ok=True)
    picked = np.zeros(rows, dtype=bool)  # spread over the file: data sorted by class calibrates on every class
    picked[np.round(np.linspace(0, rows - 1, n_cal)).astype(np.int64)] = True
    if not (cal.exists() and ev.exists()):
        _save(cal, {k: v[picked] for k, v in arrays.items() if k != "y"})
        _save(ev, {k: v[~picked] for k, v in arrays.items()})
    return {"data": str(ev), "calibration": str(cal), "data_sha256": sha, "eval_sha256": _manifest.sha256_of(ev),
            "labelled": labelled, "unlabelled": unlabelled,
            "rows": rows - n_cal, "split": f"calibration on {n_cal} rows spread evenly over --data (one in "
                                           f"{rows / n_cal:.0f}), accuracy on the other {rows - n_cal}"}


def mask_padding(prepared: dict[str, Any], model: Path, work: Path) -> dict[str, Any]:
    """`prepared` with its eval file written again, 'y' -1 at the positions the Keras model masks (a token
    tagger's padding: convert's gate ignores them), so that the baseline and every build are measured on the same
    positions; unchanged unless labels per position meet an output the model masks."""
    if not prepared.get("labelled") or prepared.get("data") is None:
        return prepared
    ev = Path(prepared["data"])
    arrays = _read(ev)
    if np.ndim(arrays["y"]) < 2:  # one label per sample: nothing a mask covers
        return prepared
    from ..converters.gate import judge_on, masked_labels
    from ..converters.quantize import load_npz
    from ..errors import ModelkitError
    from ..runtime import load

    reference = load(model)
    try:
        inputs, labels = load_npz(ev, reference.signature, need_labels=True)
        labels, by = masked_labels(reference, inputs, labels, judge_on(reference, inputs, labels)[0])
    except ModelkitError:  # labels that do not fit: said by the builds' own checks
        return prepared
    if by is None:
        return prepared
    sha = _manifest.sha256_of(ev)
    out = work / f"data-{sha[:16]}" / "masked" / ev.name
    if not out.exists():
        _save(out, {**arrays, "y": labels})
    return {**prepared, "data": str(out), "eval_sha256": _manifest.sha256_of(out),
            "split": f"{prepared['split']}; positions the model masks (padding) not judged"}


def _given(path: str | os.PathLike | None) -> str | None:
    if path is None:
        return None
    _read(Path(path))
    return str(Path(path).resolve())


def _read(path: Path) -> dict[str, np.ndarray]:
    from ..input_files import read_inputs

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    arrays = read_inputs(path)
    if not isinstance(arrays, dict):
        raise InputError(f"{path}: optimize takes an .npz ('x' or one array per input name, and 'y' labels), "
                         "not a single .npy array")
    return arrays


def _rows(arrays: dict[str, np.ndarray], path: Path) -> int:
    sizes = {k: len(v) for k, v in arrays.items() if np.ndim(v) >= 1}
    if not sizes:
        raise InputError(f"{path}: no arrays with rows")
    if len(set(sizes.values())) != 1:
        raise InputError(f"{path}: arrays have different numbers of rows: {sizes}")
    return next(iter(sizes.values()))


def _trained_on_named_data(model: Path) -> bool:
    m = _manifest.read(model)
    training = (m.training or {}) if m is not None else {}
    return bool(training.get("data") and training.get("model"))


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with _atomic.atomic_path(path, force=True) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
