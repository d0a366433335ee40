"""How much memory a Keras model's weights take, estimated from its config before Keras builds anything.

A 13 KB .keras file can declare `Dense(units=2**31)`: Keras would allocate the kernel (units x inputs)
and its initial values before reading a single weight, and TensorFlow's ResourceExhaustedError (or the
OOM killer) follows. The common layers' parameter counts are computed from their config and their saved
build shape (`build_config.input_shape`; an unknown input size counts as 1, so the estimate is a lower
bound), and a model whose weights cannot be built in the memory this process can use is refused with
ResourceError naming its largest layer. Building needs about BUILD_FACTOR times the weights: the
initializer's values, the variables, and the weights read back from the file.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterator

from ..errors import ResourceError
from .limits import available_memory, size

BUILD_FACTOR = 3


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _last(shape: list[Any] | None, channels_first: bool = False) -> int:
    """The feature / channel size of an input shape; 1 when unknown (a lower bound)."""
    if not shape:
        return 1
    dim = shape[1] if channels_first and len(shape) > 1 else shape[-1]
    return _int(dim) or 1


def _kernel(value: Any, rank: int) -> int:
    if isinstance(value, list):
        dims = [_int(v) or 1 for v in value]
        return math.prod(dims) if dims else 1
    return (_int(value) or 1) ** rank


def _params(cls: str, cfg: dict[str, Any], shape: list[Any] | None) -> tuple[int, str] | None:
    """(parameter count, how it was computed) for the layers whose weights can be large."""
    first = cfg.get("data_format") == "channels_first"
    last = _last(shape, first)
    units = _int(cfg.get("units"))
    if cls == "Dense" and units is not None:
        return units * last + units, f"{units} units x {last} inputs"
    if cls == "Embedding":
        n, d = _int(cfg.get("input_dim")), _int(cfg.get("output_dim"))
        if n is not None and d is not None:
            return n * d, f"input_dim {n} x output_dim {d}"
    if cls in ("LSTM", "GRU", "SimpleRNN") and units is not None:
        gates = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[cls]
        return gates * (units * (last + units) + 2 * units), f"{gates} gates x {units} units x ({last} + {units})"
    rank = next((int(c) for c in cls if c.isdigit()), 0)
    if not cls.startswith(("Conv", "DepthwiseConv", "SeparableConv")) or rank not in (1, 2, 3):
        return None
    k = _kernel(cfg.get("kernel_size"), rank)
    mult = _int(cfg.get("depth_multiplier")) or 1
    filters = _int(cfg.get("filters")) or 0
    if cls.startswith("DepthwiseConv"):
        return k * last * mult, f"kernel {k} x {last} channels x depth_multiplier {mult}"
    if cls.startswith("SeparableConv"):
        return (k * last * mult + last * mult * filters + filters,
                f"kernel {k} x {last} channels x {mult} + {last * mult} x {filters} filters")
    groups = _int(cfg.get("groups")) or 1
    return filters * k * max(1, last // groups) + filters, f"{filters} filters x kernel {k} x {last} channels"


def _itemsize(dtype: Any) -> tuple[int, str]:
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    name = name if isinstance(name, str) else "float32"
    if name.startswith("mixed_"):
        return 4, name  # variables stay float32
    for key, nbytes in (("float64", 8), ("bfloat16", 2), ("float16", 2), ("int8", 1)):
        if key in name:
            return nbytes, name
    return 4, name


def estimate(config: Any) -> Iterator[tuple[str, str, int, str]]:
    """(layer name, class, bytes, formula) for every layer of a known kind, nested models included."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
            continue
        if not isinstance(node, dict):
            continue
        cls, cfg = node.get("class_name"), node.get("config")
        if isinstance(cls, str) and isinstance(cfg, dict):
            build = node.get("build_config")
            shape = build.get("input_shape") if isinstance(build, dict) else None
            found = _params(cls, cfg, shape if isinstance(shape, list) else None)
            if found:
                itemsize, dtype = _itemsize(cfg.get("dtype"))
                formula = f"{found[1]} = {found[0]} parameters of {dtype}"
                yield str(cfg.get("name", "?")), cls, found[0] * itemsize, formula
        stack.extend(v for k, v in node.items() if isinstance(v, (dict, list)) and k != "compile_config")


def check_weight_sizes(config: Any, source: str | os.PathLike) -> None:
    """ResourceError when the weights the config declares cannot be built in this process's memory."""
    layers = list(estimate(config))
    total = sum(b for _, _, b, _ in layers)
    room = available_memory()
    if not layers or room is None or total * BUILD_FACTOR <= room:
        return
    name, cls, nbytes, formula = max(layers, key=lambda item: item[2])
    raise ResourceError(
        f"{Path(source)}: refused to load: its config declares weights of about {size(total)} (largest: layer "
        f"'{name}' ({cls}): {formula}, {size(nbytes)}); building them needs about {BUILD_FACTOR}x that and this "
        f"process can use {size(room)} now. Refused before Keras allocated anything (a small file that declares "
        "this much is likely hostile)")
