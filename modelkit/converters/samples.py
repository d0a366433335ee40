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
from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import InputError, InputNameError, ShapeError
from ..spec import Signature, TensorSpec

STD_SPAN = 2.0  # Normalization: inputs within mean ± 2 std
DEFAULT_INT_HIGH = 10
# layers that leave the values' range as it is: look through them for a range-defining layer
_VALUE_PRESERVING = frozenset({
    "Reshape", "Flatten", "Permute", "Resizing", "CenterCrop", "Cropping1D", "Cropping2D", "Cropping3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
    "GaussianNoise", "GaussianDropout", "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
    "RandomCrop", "Identity", "Masking"})
_MODEL_CLASSES = ("Functional", "Sequential", "Model")


@dataclass(frozen=True)
class Range:
    """Where one input's values come from: uniform in [low, high) (per channel when low/high are lists
    as long as the last dimension), or drawn from `values`; `why` names the layer it was read from."""

    low: float | list[float] | None = None
    high: float | list[float] | None = None
    values: list[Any] | None = None
    why: str = ""

    def describe(self) -> str:
        if self.values is not None:
            shown = ", ".join(str(v) for v in self.values[:5]) + (", ..." if len(self.values) > 5 else "")
            return f"one of [{shown}] ({self.why})"
        per = " per channel" if isinstance(self.low, list) or isinstance(self.high, list) else ""
        return f"[{_fmt(self.low, min)}, {_fmt(self.high, max)}){per} ({self.why})"

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "values": self.values, "why": self.why}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Range":
        return cls(d.get("low"), d.get("high"), d.get("values"), str(d.get("why", "")))


def _fmt(v: Any, pick: Any) -> str:
    return f"{pick(v) if isinstance(v, list) else v:.4g}"


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
                         _id_ranges(_known_ranges(sig, reference, manifest), sig))
    found, label = dataset_samples(manifest, sig)
    if found is not None:
        return InputPlan("dataset", label or "real samples", found,
                         _id_ranges(_known_ranges(sig, reference, manifest), sig))
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


def _id_ranges(ranges: dict[str, Range], sig: Signature) -> dict[str, Range]:
    """The hard id bounds (Embedding, CategoryEncoding) of integer inputs: recorded with real samples too, as
    the engines check ids against them (modelkit.runtime.id_ranges)."""
    ints = {s.name for s in sig.inputs if np.dtype(s.dtype).kind in "iu"}
    return {k: r for k, r in ranges.items() if k in ints and r.values is None
            and isinstance(r.low, int) and isinstance(r.high, int)}


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
                             + (" (or key 'x' for a one-input model)" if len(names) == 1 else ""))
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
    (else `x_test`) is the input. Any other key must name an input (`--data` here, `modelkit run --input`)."""
    items = {k: v for k, v in items.items() if k in names or k not in ("y", "y_test")}
    if len(names) == 1 and names[0] not in items and items and set(items) <= {"x", "x_test"}:
        return {names[0]: items["x" if "x" in items else "x_test"]}
    return items


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
    """Seeded values of spec's dtype: within rng_range when given, else uniform [0, 1) / ints in [0, 10)."""
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


def infer_ranges(model: Any, input_names: list[str]) -> dict[str, Range]:
    """{input name: Range} for the inputs whose first meaningful consumer defines one."""
    out: dict[str, Range] = {}
    graph = _Graph(model.get_config(), model)
    for i, name in enumerate(input_names):
        found = graph.range_for(graph.input_node(name, i))
        if found is not None:
            out[name] = found
    return out


class _Graph:
    """The layers of one functional or sequential config, with the live model for adapted state."""

    def __init__(self, config: dict[str, Any], live: Any):
        self.config = config.get("config", config) if "layers" not in config else config
        self.live = live
        self.layers = list(self.config.get("layers") or [])
        self.sequential = not any(layer.get("inbound_nodes") for layer in self.layers)

    def input_node(self, name: str, index: int) -> str | None:
        inputs = [layer for layer in self.layers if layer.get("class_name") == "InputLayer"]
        names = [_name(layer) for layer in inputs]
        if name in names:
            return name
        return names[index] if index < len(names) else None

    def consumers(self, name: str) -> Iterator[dict[str, Any]]:
        if self.sequential:
            pos = [i for i, layer in enumerate(self.layers) if _name(layer) == name]
            if pos and pos[0] + 1 < len(self.layers):
                yield self.layers[pos[0] + 1]
            return
        for layer in self.layers:
            if name in set(_histories(layer.get("inbound_nodes"))):
                yield layer

    def range_for(self, name: str | None, depth: int = 0) -> Range | None:
        if name is None or depth > 8:
            return None
        for layer in self.consumers(name):
            cls = layer.get("class_name")
            if cls in _VALUE_PRESERVING:
                found = self.range_for(_name(layer), depth + 1)
            elif cls in _MODEL_CLASSES or (layer.get("config") or {}).get("layers"):
                inner = self._live(layer)
                sub = _Graph(layer.get("config") or {}, inner)
                found = sub.range_for(sub.input_node("", 0), depth + 1) if inner is not None else None
            else:
                found = layer_range(cls, layer.get("config") or {}, self._live(layer), _name(layer))
            if found is not None:
                return found
        return None

    def _live(self, layer: dict[str, Any]) -> Any:
        try:
            return self.live.get_layer(_name(layer)) if self.live is not None else None
        except ValueError:
            return None


def _name(layer: dict[str, Any]) -> str:
    return str(layer.get("name") or (layer.get("config") or {}).get("name"))


def _histories(node: Any) -> Iterator[str]:
    """Names of the layers whose outputs feed a serialized inbound node (any nesting)."""
    if isinstance(node, dict):
        hist = (node.get("config") or {}).get("keras_history") if node.get("class_name") == "__keras_tensor__" \
            else None
        if hist:
            yield str(hist[0])
        for v in node.values():
            yield from _histories(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _histories(v)


def layer_range(cls: str, cfg: dict[str, Any], live: Any, name: str) -> Range | None:
    """The input range one layer class implies, or None."""
    why = f"{cls} '{name}'"
    if cls == "Rescaling":
        return _rescaling(cfg, why)
    if cls == "Normalization" and not cfg.get("invert"):
        mean, var = _stat(cfg.get("mean"), live, "mean"), _stat(cfg.get("variance"), live, "variance")
        if mean is None or var is None:
            return None
        std = np.sqrt(np.maximum(np.broadcast_to(var, mean.shape), 0.0))
        std = np.where(std > 0, std, 1e-3)
        return Range(_plain(mean - STD_SPAN * std), _plain(mean + STD_SPAN * std), why=f"{why}: mean ± 2 std")
    if cls == "Discretization":
        bounds = cfg.get("bin_boundaries") or _attr_list(live, "bin_boundaries")
        if not bounds:
            return None
        lo, hi = float(min(bounds)), float(max(bounds))
        pad = (hi - lo) / max(len(bounds) - 1, 1) or 1.0
        return Range(lo - pad, hi + pad, why=f"{why}: around its bin boundaries")
    if cls == "Embedding" and cfg.get("input_dim"):
        return Range(0, int(cfg["input_dim"]), why=f"{why}: ids below input_dim {cfg['input_dim']}")
    if cls == "CategoryEncoding" and cfg.get("num_tokens"):
        return Range(0, int(cfg["num_tokens"]), why=f"{why}: ids below num_tokens {cfg['num_tokens']}")
    if cls in ("IntegerLookup", "StringLookup") and not cfg.get("invert"):
        vocab = _vocabulary(cfg, live)
        return Range(values=vocab, why=f"{why}: its vocabulary") if vocab else None
    return None


def _rescaling(cfg: dict[str, Any], why: str) -> Range | None:
    scale = np.asarray(cfg.get("scale", 1.0), dtype=np.float64).reshape(-1)
    offset = np.asarray(cfg.get("offset", 0.0), dtype=np.float64).reshape(-1)
    if not scale.size or np.any(scale == 0) or np.max(np.abs(scale)) >= 1:
        return None  # scaling up (or not at all): the raw values are already small
    target_low = -1.0 if np.min(offset) < 0 else 0.0  # x * scale + offset lands in [-1, 1] or [0, 1]
    a, b = (target_low - offset) / scale, (1.0 - offset) / scale
    low, high = np.minimum(a, b), np.maximum(a, b)
    return Range(_plain(low), _plain(high),
                 why=f"{why}: x * {_short(scale)} + {_short(offset)} lands in [{target_low:g}, 1]".replace("+ -", "- "))


def _stat(given: Any, live: Any, attr: str) -> np.ndarray | None:
    if given is not None:
        return np.asarray(given, dtype=np.float64).reshape(-1)
    value = getattr(live, attr, None) if live is not None else None
    if value is None:
        return None
    import keras

    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64).reshape(-1)


def _attr_list(live: Any, attr: str) -> list[float] | None:
    value = getattr(live, attr, None) if live is not None else None
    return [float(v) for v in value] if value is not None else None


def _vocabulary(cfg: dict[str, Any], live: Any) -> list[Any] | None:
    vocab = cfg.get("vocabulary")
    if not isinstance(vocab, list) and live is not None and hasattr(live, "get_vocabulary"):
        vocab = list(live.get_vocabulary())
    if not isinstance(vocab, list):
        return None
    skip = {cfg.get("oov_token"), cfg.get("mask_token")}
    out = [v.item() if isinstance(v, np.generic) else v for v in vocab]
    out = [v.decode() if isinstance(v, bytes) else v for v in out if v not in skip]
    return out or None


def _short(v: np.ndarray) -> str:
    value = _plain(v)
    return f"{value:.4g}" if isinstance(value, float) else "[" + ", ".join(f"{x:.4g}" for x in value) + "]"


def _plain(v: np.ndarray) -> float | list[float]:
    """A JSON-able bound: one float, or a list when it differs per channel."""
    arr = np.asarray(v, dtype=np.float64).reshape(-1)
    return float(arr[0]) if arr.size == 1 or np.all(arr == arr[0]) else [float(x) for x in arr]
