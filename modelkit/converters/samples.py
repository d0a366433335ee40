"""Verification inputs that fit the model.

Uniform [0, 1) floats prove little on a model that expects pixels in 0-255 (its output barely moves)
and ints in [0, 10) are no ids of an IntegerLookup vocabulary. `plan_inputs` picks, in order:

1. the user's samples (`--data samples.npz`, `data=`): keys are input names (`x` for a one-input model);
   a key that names no input, a missing input or a wrong shape is an InputError;
2. the data set the manifest names (the test split of the data the model was trained on);
3. ranges inferred from the Keras model: a leading Rescaling (its raw range), Normalization (mean ± 2 std),
   Discretization (around its bin boundaries), Embedding / CategoryEncoding (ids below input_dim /
   num_tokens), IntegerLookup / StringLookup (their vocabulary); artifacts converted from a .keras file
   carry these ranges in their manifest (extra.verification_inputs), so later hops and `modelkit verify`
   use them too;
4. seeded uniform [0, 1) floats and ints in [0, 10).

The plan's label says which source fed the check; it goes into every parity report.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import InputError, InputNameError, ShapeError
from ..keras_io.ranges import Range, hard_id_ranges, infer_ranges
from ..spec import Signature, TensorSpec

DEFAULT_INT_HIGH = 10

@dataclass
class InputPlan:
    """What feeds a parity check: `data` rows (cycled) or generated values within `ranges`, else uniform."""

    source: str  # "data" | "dataset" | "inferred" | "uniform"
    label: str
    data: dict[str, np.ndarray] | None = None
    ranges: dict[str, Range] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "label": self.label,
                "ranges": {k: r.to_dict() for k, r in self.ranges.items()}}


def plan_inputs(sig: Signature, reference: Any = None, manifest: Any = None,
                data: Mapping[str, np.ndarray] | None = None, data_label: str | None = None,
                seed: int = 0) -> InputPlan:
    """The inputs for verifying against `reference` (a runtime Model, or None), in the order above."""
    if data is not None:
        checked = check_samples(data, sig, data_label or "--data")
        rows = len(next(iter(checked.values())))
        return InputPlan("data", f"user samples ({data_label or 'data'}, {rows} rows)", checked,
                         hard_id_ranges(_known_ranges(sig, reference, manifest), sig))
    found, label = dataset_samples(manifest, sig)
    if found is not None:
        return InputPlan("dataset", label or "real samples", found,
                         hard_id_ranges(_known_ranges(sig, reference, manifest), sig))
    ranges = _known_ranges(sig, reference, manifest)
    uniform = f"seeded uniform [0,1), seed {seed}"
    if not ranges:
        return InputPlan("uniform", uniform)
    parts = [f"'{n}' in {r.describe()}" for n, r in ranges.items()]
    rest = "" if len(ranges) == len(sig.inputs) else f"; other inputs {uniform}"
    return InputPlan("inferred", f"ranges inferred from the model: {'; '.join(parts)}{rest}", None, ranges)


def _known_ranges(sig: Signature, reference: Any, manifest: Any) -> dict[str, Range]:
    """Ranges inferred from the Keras reference, else those its manifest carries from an earlier hop."""
    ranges = _keras_ranges(reference, sig) if reference is not None else {}
    if not ranges and manifest is not None:
        stored = ((manifest.extra or {}).get("verification_inputs") or {}).get("ranges") or {}
        ranges = {k: Range.from_dict(v) for k, v in stored.items() if k in sig.input_names}
    return ranges


def read_samples(path: str | os.PathLike, sig: Signature) -> dict[str, np.ndarray]:
    """A .npz of samples checked against `sig` (see check_samples)."""
    from ..input_files import read_inputs

    got = read_inputs(path)
    if not isinstance(got, dict):
        got = {"x": got}
    return check_samples(got, sig, os.fspath(path))


def check_samples(data: Mapping[str, Any], sig: Signature, label: str) -> dict[str, np.ndarray]:
    """Samples keyed by input name (or `x` for a one-input model), every input present, shapes that fit."""
    names = sig.input_names
    items = as_inputs(dict(data), names)
    unknown = [k for k in items if k not in names]
    missing = [n for n in names if n not in items]
    if unknown or missing:
        what = "; ".join(p for p in (f"keys {unknown} match no input" if unknown else "",
                                     f"inputs {missing} have no samples" if missing else "") if p)
        raise InputNameError(f"{label}: {what}; the model's inputs are {names}"
                             + (" (or key 'x' for a one-input model)" if len(names) == 1 else "")
                             + (f", or np.savez's arr_0 to arr_{len(names) - 1} in that order" if len(names) > 1
                                else ", or np.savez's arr_0 alone"))
    out: dict[str, np.ndarray] = {}
    rows = None
    for spec in sig.inputs:
        arr = np.asarray(items[spec.name])
        fixed_ok = arr.ndim == spec.rank and all(d is None or d == a for d, a in zip(spec.shape, arr.shape))
        if not fixed_ok or arr.shape[0] == 0:
            raise ShapeError(f"{label}: samples of '{spec.name}' have shape {arr.shape}; the input takes "
                             f"{spec.shape_str()} (first dimension: the samples)")
        if rows is not None and arr.shape[0] != rows:
            raise ShapeError(f"{label}: '{spec.name}' has {arr.shape[0]} samples, other inputs {rows}")
        rows = arr.shape[0]
        if arr.dtype.kind not in "biuf":
            raise InputError(f"{label}: samples of '{spec.name}' are {arr.dtype}, not numbers")
        out[spec.name] = arr
    return out


def as_inputs(items: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Labels (`y`, `y_test`) that name no input are not samples; for a one-input model a training .npz's `x`
    (else `x_test`) is the input; `np.savez(path, a, b)`'s keys `arr_0`, `arr_1` are the inputs in the model's
    order, when there is one per input. Any other key must name an input (`--data`, `--calibration-data`,
    `--eval-data`, `modelkit run --input`)."""
    items = {k: v for k, v in items.items() if k in names or k not in ("y", "y_test")}
    if len(names) == 1 and names[0] not in items and items and set(items) <= {"x", "x_test"}:
        return {names[0]: items["x" if "x" in items else "x_test"]}
    positional = [f"arr_{i}" for i in range(len(names))]
    if not set(names) & set(items) and sorted(items) == sorted(positional):
        return dict(zip(names, (items[k] for k in positional)))
    return items


def fixed_batch(sig: Signature) -> int | None:
    """The batch size every input of `sig` fixes (a library compiled for one batch), else None."""
    sizes = {s.shape[0] for s in sig.inputs if s.shape}
    return sizes.pop() if len(sizes) == 1 and None not in sizes else None


def predict_rows(model: Any, inputs: Mapping[str, np.ndarray], chunk: int | None = None) -> dict[str, np.ndarray]:
    """Every row of `inputs` through model.predict, outputs concatenated: in calls of the batch the signature
    fixes (the last call filled up with rows from the start, whose outputs are dropped), else in calls of
    `chunk` rows (None: one call). Inputs of different or no row counts go to predict whole, for its typed
    error; a ShapeError when an output has no row per input row."""
    rows = {np.shape(a)[0] if np.ndim(a) else None for a in inputs.values()}
    fixed = fixed_batch(model.signature)
    size = fixed or chunk
    if len(rows) != 1 or not size or rows in ({0}, {None}, {size}):
        return model.predict(dict(inputs))
    (n,) = rows
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, size):
        idx = np.arange(start, start + size) % n if fixed else np.arange(start, min(start + size, n))
        for name, value in model.predict({k: v[idx] for k, v in inputs.items()}).items():
            if value.ndim == 0 or value.shape[0] != len(idx):
                raise ShapeError(f"output '{name}' has shape {value.shape}, not one row per input row: {n} rows "
                                 f"cannot be run {size} at a time")
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(vs)[:n] for name, vs in parts.items()}


def dataset_samples(manifest: Any, sig: Signature) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """Real samples: the test split of the data set the manifest says the model was trained on."""
    training = (manifest.training if manifest else None) or {}
    if not training.get("data") or not training.get("model"):
        return None, None
    from ..core.data import test_split
    from ..errors import TrainingError

    try:
        inputs, _labels = test_split(training["data"], training["model"], int(training.get("seed", 0)), sig)
    except TrainingError:
        return None, None
    if sorted(inputs) != sorted(sig.input_names):
        return None, None
    return inputs, f"{training['data']} test split (real samples)"


def generate(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator, rng_range: Range | None = None
             ) -> np.ndarray:
    """Seeded values of spec's dtype: within rng_range when given, else uniform [0, 1) / ints in [0, 10); every
    other row padded from a random step when the range has a `pad` (the value a Masking layer or an
    Embedding(mask_zero=True) masks)."""
    out = _values(spec, shape, rng, rng_range)
    if rng_range is not None and rng_range.pad is not None and len(shape) >= 2 and shape[1] >= 2:
        for row in range(1, shape[0], 2):
            out[row, int(rng.integers(1, shape[1])):] = rng_range.pad
    return out


def _values(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator, rng_range: Range | None
            ) -> np.ndarray:
    from ..errors import ParityError

    dtype = np.dtype(spec.dtype)
    kind = dtype.kind
    if rng_range is not None and rng_range.values:
        values = np.asarray(rng_range.values)
        if values.dtype.kind in "biuf":
            return values[rng.integers(0, len(values), size=shape)].astype(dtype)
    if kind == "b":
        return rng.random(shape) > 0.5
    if kind not in "fiu":
        raise ParityError(f"cannot make test inputs of dtype {spec.dtype} for '{spec.name}'")
    if rng_range is None or rng_range.low is None or rng_range.high is None:
        if kind == "f":
            return rng.random(shape, dtype=np.float64).astype(dtype)
        return rng.integers(0, DEFAULT_INT_HIGH, size=shape).astype(dtype)
    low, high = _bound(rng_range.low, shape, np.min), _bound(rng_range.high, shape, np.max)
    if kind == "f":
        return (low + rng.random(shape) * (high - low)).astype(dtype)
    info = np.iinfo(dtype)
    lo = np.clip(np.ceil(low), info.min, info.max)
    hi = np.clip(np.floor(high), lo + 1, info.max)  # at least one value
    return np.floor(lo + rng.random(shape) * (hi - lo)).astype(dtype)


def _bound(v: float | list[float], shape: tuple[int, ...], overall: Any) -> np.ndarray:
    """A bound that broadcasts over `shape`: per channel (last axis) when it has one value per channel."""
    arr = np.asarray(v, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        return arr.reshape(())
    if shape and arr.size == shape[-1]:
        return arr
    return np.asarray(overall(arr))  # not one per channel: the overall bound


# ------------------------------------------------------------------------------------------------
# Ranges from the Keras model: follow each input to the first layer that says what it expects.

def _keras_ranges(reference: Any, sig: Signature) -> dict[str, Range]:
    model = _keras_model(reference)
    if model is None:
        return {}
    try:
        return infer_ranges(model, sig.input_names)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        return {}  # an unusual config: fall back to uniform rather than fail the conversion


def _keras_model(reference: Any) -> Any:
    from ..formats import Format

    if getattr(reference, "format", None) != Format.KERAS:
        return None
    obj = reference
    for _ in range(3):  # MemoReference -> KerasModel -> keras.Model
        if hasattr(obj, "get_config") and hasattr(obj, "layers"):
            return obj
        obj = getattr(obj, "model", None)
    return None


