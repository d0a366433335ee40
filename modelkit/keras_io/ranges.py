"""Where a Keras model's inputs take their values, read from the layer each input feeds first (looking through
value-preserving layers and nested models): Rescaling, Normalization (mean +- 2 std), Discretization, Embedding and
CategoryEncoding (ids below input_dim / num_tokens), IntegerLookup / StringLookup (the vocabulary). An input a
Masking layer or an Embedding(mask_zero=True) reads is padded too (`pad`): every other generated row ends in
padding from a random step, so parity proves that an artifact masks what its source masks.

Verification draws its generated inputs from these ranges (modelkit.converters.samples), and the engines check
integer ids against the hard ones (modelkit.runtime.id_ranges): an id past an Embedding's table is undefined per
engine (an error, or garbage read out of bounds).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator, Mapping

import numpy as np

from ..spec import Signature

STD_SPAN = 2.0  # Normalization: inputs within mean ± 2 std
# layers that leave the values' range as it is: look through them for a range-defining layer
_VALUE_PRESERVING = frozenset({
    "Reshape", "Flatten", "Permute", "Resizing", "CenterCrop", "Cropping1D", "Cropping2D", "Cropping3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
    "GaussianNoise", "GaussianDropout", "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
    "RandomCrop", "Identity",
    # augmentation that returns its input at inference (Keras 3.15), inside a Pipeline too (nc157)
    "RandomContrast", "RandomBrightness", "RandomGrayscale", "RandomHue", "RandomSaturation", "RandomSharpness",
    "RandomColorDegeneration", "RandomPosterization", "RandomColorJitter", "RandomErasing", "RandomGaussianBlur",
    "RandomInvert", "RandomShear", "RandomPerspective", "RandomElasticTransform"})
_MODEL_CLASSES = ("Functional", "Sequential", "Model")


@dataclass(frozen=True)
class Range:
    """Where one input's values come from: uniform in [low, high) (per channel when low/high are lists
    as long as the last dimension), or drawn from `values` (neither: uniform [0, 1) / ints in [0, 10)); `pad`: the
    value the model masks (every other row padded with it from a random step); `why` names the layer(s)."""

    low: float | list[float] | None = None
    high: float | list[float] | None = None
    values: list[Any] | None = None
    why: str = ""
    pad: float | None = None

    def describe(self) -> str:
        padded = "" if self.pad is None else f", every other row padded with {self.pad:g} from a random step"
        if self.values is not None:
            shown = ", ".join(str(v) for v in self.values[:5]) + (", ..." if len(self.values) > 5 else "")
            return f"one of [{shown}]{padded} ({self.why})"
        if self.low is None or self.high is None:
            return f"uniform{padded} ({self.why})"
        per = " per channel" if isinstance(self.low, list) or isinstance(self.high, list) else ""
        return f"[{_fmt(self.low, min)}, {_fmt(self.high, max)}){per}{padded} ({self.why})"

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "values": self.values, "why": self.why, "pad": self.pad}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Range":
        return cls(d.get("low"), d.get("high"), d.get("values"), str(d.get("why", "")), d.get("pad"))


def _fmt(v: Any, pick: Any) -> str:
    return f"{pick(v) if isinstance(v, list) else v:.4g}"


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
            if cls == "Masking":  # the values of the layers after it, padded with the value it masks
                after = self.range_for(_name(layer), depth + 1) or Range()
                value = float((layer.get("config") or {}).get("mask_value", 0.0))
                why = f"Masking '{_name(layer)}' masks steps of {value:g}"
                found = replace(after, pad=value, why=f"{after.why}; {why}" if after.why else why)
            elif cls in _VALUE_PRESERVING:
                found = self.range_for(_name(layer), depth + 1)
            elif cls == "Pipeline":
                found = self._pipeline_range(layer, depth)
            elif cls in _MODEL_CLASSES or (layer.get("config") or {}).get("layers"):
                inner = self._live(layer)
                sub = _Graph(layer.get("config") or {}, inner)
                found = sub.range_for(sub.input_node("", 0), depth + 1) if inner is not None else None
            else:
                found = layer_range(cls, layer.get("config") or {}, self._live(layer), _name(layer))
            if found is not None:
                return found
        return None

    def _pipeline_range(self, layer: dict[str, Any], depth: int) -> Range | None:
        """A Pipeline's range: its first layer that is not value-preserving defines it (a Rescaling behind
        augmentation: nc157); with none, the layers after the Pipeline do."""
        steps = list((layer.get("config") or {}).get("layers") or [])
        lives = list(getattr(self._live(layer), "layers", None) or [])
        for i, step in enumerate(steps):
            cls = step.get("class_name")
            if cls not in _VALUE_PRESERVING:
                live = lives[i] if len(lives) == len(steps) else None
                return layer_range(str(cls), step.get("config") or {}, live, _name(step))
        return self.range_for(_name(layer), depth + 1)

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
        pad = 0.0 if cfg.get("mask_zero") else None
        masks = ", 0 pads (mask_zero)" if pad is not None else ""
        return Range(0, int(cfg["input_dim"]), why=f"{why}: ids below input_dim {cfg['input_dim']}{masks}", pad=pad)
    if cls == "CategoryEncoding" and cfg.get("num_tokens"):
        return Range(0, int(cfg["num_tokens"]), why=f"{why}: ids below num_tokens {cfg['num_tokens']}")
    if cls in ("IntegerLookup", "StringLookup") and not cfg.get("invert"):
        vocab = _vocabulary(cfg, live)
        if not vocab:
            return None
        unknown = _unknown_ids(cfg, vocab) if cls == "IntegerLookup" else []
        told = f", and unknown ids {', '.join(map(str, unknown))}" if unknown else ""
        return Range(values=vocab + unknown, why=f"{why}: its vocabulary{told}")
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


def _unknown_ids(cfg: dict[str, Any], vocab: list[Any]) -> list[int]:
    """Ids outside an IntegerLookup's vocabulary, when the layer takes unknown ids (num_oov_indices >= 1), else []:
    one above it and two consecutive negative ones, so that with several OOV buckets (`x mod n`, arithmetic that
    converters write) some negative id is no multiple of n."""
    if cfg.get("num_oov_indices", 1) < 1 or not all(isinstance(v, int) for v in vocab):
        return []
    top = max(abs(v) for v in vocab) + 1
    return [v for v in (top, -top, -top - 1) if v not in (cfg.get("mask_token"), cfg.get("oov_token"))]


def _short(v: np.ndarray) -> str:
    value = _plain(v)
    return f"{value:.4g}" if isinstance(value, float) else "[" + ", ".join(f"{x:.4g}" for x in value) + "]"


def _plain(v: np.ndarray) -> float | list[float]:
    """A JSON-able bound: one float, or a list when it differs per channel."""
    arr = np.asarray(v, dtype=np.float64).reshape(-1)
    return float(arr[0]) if arr.size == 1 or np.all(arr == arr[0]) else [float(x) for x in arr]


def hard_id_ranges(ranges: Mapping[str, Range], sig: Signature) -> dict[str, Range]:
    """The ranges that bound integer inputs exactly (Embedding input_dim, CategoryEncoding num_tokens): ids outside
    them have no defined result. A vocabulary (`values`) maps unknown ids to a bucket, so it is no bound."""
    ints = {s.name for s in sig.inputs if np.dtype(s.dtype).kind in "iu"}
    return {k: r for k, r in ranges.items() if k in ints and r.values is None
            and isinstance(r.low, int) and isinstance(r.high, int)}


def keras_id_ranges(model: Any, sig: Signature) -> dict[str, Range]:
    """hard_id_ranges of a live Keras model; none for a config this reader does not follow."""
    try:
        return hard_id_ranges(infer_ranges(model, sig.input_names), sig)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        return {}
