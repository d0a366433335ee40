"""TensorSpec and Signature: the one description of a model's inputs and outputs.

Every artifact and runtime Model exposes a Signature. Inputs are bound by name, never by position.
This module imports numpy only, so it is safe on every light path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

import numpy as np

from .errors import DTypeError, InputError, InputNameError, ShapeError, first_line

Dim = int | None


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: shape with None for dynamic dimensions, and a numpy dtype name."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(None if d is None or (isinstance(d, int) and d < 0) else int(d)
                                                for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)

    @property
    def rank(self) -> int:
        return len(self.shape)

    def shape_str(self) -> str:
        return "(" + ", ".join("?" if d is None else str(d) for d in self.shape) + ")"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        return cls(name=d["name"], shape=tuple(d["shape"]), dtype=d.get("dtype", "float32"))

    def concrete_shape(self, batch: int, other: int | None = None) -> tuple[int, ...]:
        """A concrete shape: dim 0 if dynamic becomes `batch`, other dynamic dims become `other`."""
        out = []
        for i, d in enumerate(self.shape):
            if d is not None:
                out.append(d)
            elif i == 0:
                out.append(batch)
            else:
                if other is None:
                    raise ShapeError(f"input '{self.name}' has a dynamic non-batch dimension {i}; "
                                     "give a size for it")
                out.append(other)
        return tuple(out)


@dataclass(frozen=True)
class Signature:
    """Ordered input and output TensorSpecs of a model."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = field(default_factory=tuple)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Signature":
        return cls(inputs=tuple(TensorSpec.from_dict(x) for x in d["inputs"]),
                   outputs=tuple(TensorSpec.from_dict(x) for x in d.get("outputs", [])))

    def warmup_inputs(self, rows: int) -> dict[str, np.ndarray]:
        """Inputs of `rows` rows to warm an engine up with (open non-batch dims of 1): ones, not zeros, since 0 is
        Keras' padding (mask_zero, Masking), and a row of padding only is no warm-up (an int8 TFLite masked mean
        divides by its zero count and fails the call)."""
        return {s.name: np.ones(s.concrete_shape(rows, 1), s.dtype) for s in self.inputs}

    def describe(self) -> str:
        lines = ["inputs:"] + [f"  {s.name}: {s.dtype}{s.shape_str()}" for s in self.inputs]
        lines += ["outputs:"] + [f"  {s.name}: {s.dtype}{s.shape_str()}" for s in self.outputs]
        return "\n".join(lines)

    @cached_property
    def _bind_plan(self) -> tuple[tuple[TensorSpec, str, int, np.dtype, tuple[tuple[int, int], ...], bool], ...]:
        """Per-spec facts bind needs on every call, computed once: name, rank, the dtype object, the
        fixed dims (index, size) and whether dim 0 is the dynamic batch. cached_property writes to the
        instance __dict__, so the frozen dataclass (and its equality) is untouched."""
        return tuple((s, s.name, s.rank, np.dtype(s.dtype),
                      tuple((i, d) for i, d in enumerate(s.shape) if d is not None),
                      bool(s.shape) and s.shape[0] is None) for s in self.inputs)

    @cached_property
    def _fast_plan(self) -> tuple[tuple[str, np.dtype, int, tuple[int, ...]], ...] | None:
        """For bind_fast: (name, dtype, rank, the dims after the batch) per input, when the batch is the only
        open dimension and no fixed one is 0; else None (every call takes bind)."""
        plan = []
        for s in self.inputs:
            tail = s.shape[1:]
            if not s.shape or s.shape[0] is not None or None in tail or 0 in tail:
                return None
            plan.append((s.name, np.dtype(s.dtype), s.rank, tail))
        return tuple(plan)

    def bind_fast(self, inputs: Any) -> dict[str, np.ndarray] | None:
        """The inputs as bind would return them when they are already exactly right (a dict, or one bare array,
        of C-contiguous ndarrays of the input's dtype and fixed dims, one batch size > 0): no copy, no checks
        left. Anything else returns None, and bind (with its typed errors) takes over. A dtype equal to the
        input's is native-endian, and a contiguous array is passed as it is, so nothing here needs precheck."""
        plan = self._fast_plan
        if plan is None:
            return None
        if type(inputs) is np.ndarray:
            if len(plan) != 1:
                return None
            inputs = {plan[0][0]: inputs}
        elif type(inputs) is not dict or len(inputs) != len(plan):
            return None
        batch = None
        for name, want, rank, tail in plan:
            v = inputs.get(name)
            if type(v) is not np.ndarray:
                return None
            dtype, shape = v.dtype, v.shape
            if (dtype is not want and dtype != want) or len(shape) != rank or shape[1:] != tail or not shape[0] \
                    or (batch is not None and shape[0] != batch) or not v.flags.c_contiguous:
                return None
            batch = shape[0]
        return inputs

    @cached_property
    def _input_name_set(self) -> frozenset[str]:
        return frozenset(s.name for s in self.inputs)

    def bind(self, inputs: Any) -> dict[str, np.ndarray]:
        """Validate inputs against the signature and return them as a dict of contiguous arrays.

        A bare array is accepted for single-input models. Raises InputNameError, ShapeError or
        DTypeError naming what was expected and what came, before anything reaches a native engine.
        Every check runs on every call; what is per-signature (names, dtypes, fixed dims) is cached.
        """
        if type(inputs) is not dict and (type(inputs) is np.ndarray or not isinstance(inputs, Mapping)):
            if len(self.inputs) != 1:
                raise InputNameError(f"model has {len(self.inputs)} inputs {self.input_names}; "
                                     "pass a dict keyed by input name, not a bare array")
            inputs = {self.inputs[0].name: inputs}
        names = self._input_name_set
        if len(inputs) != len(names):
            self._name_error(inputs)
        for n in names:
            if n not in inputs:
                self._name_error(inputs)
        bound: dict[str, np.ndarray] = {}
        batch: int | None = None
        for spec, name, rank, want, fixed, dynamic_batch in self._bind_plan:
            value = inputs[name]
            # fast path: an ndarray of exactly the dtype; anything else takes the converting path
            arr = value if type(value) is np.ndarray and value.dtype == want else _as_array(spec, value)
            shape = arr.shape
            if len(shape) != rank:
                raise ShapeError(f"input '{spec.name}': expected rank {spec.rank} {spec.shape_str()}, "
                                 f"got rank {arr.ndim} with shape {tuple(shape)}")
            for i, d in fixed:
                if shape[i] != d:
                    raise ShapeError(f"input '{spec.name}': dimension {i} must be {d} "
                                     f"(expected {spec.shape_str()}), got shape {tuple(shape)}")
            if dynamic_batch:
                if batch is not None and shape[0] != batch:
                    raise ShapeError(f"input '{spec.name}': batch size {shape[0]} differs from "
                                     f"the other inputs' batch size {batch}")
                batch = shape[0]
            if 0 in shape:
                raise ShapeError(f"input '{spec.name}': empty tensor with shape {tuple(shape)}")
            # np.ascontiguousarray returns a C-contiguous base-class ndarray (rank >= 1); skip the call
            # only when the array already is exactly that
            bound[name] = (arr if type(arr) is np.ndarray and shape and arr.flags.c_contiguous
                           else np.ascontiguousarray(arr))
        return bound

    def _name_error(self, inputs: Mapping[str, Any]) -> None:
        expected = self.input_names
        missing = [n for n in expected if n not in inputs]
        extra = [n for n in inputs if n not in expected]
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unexpected {extra}")
        raise InputNameError(f"input names do not match the signature: {', '.join(parts)}; "
                             f"expected {expected}")


def _as_array(spec: TensorSpec, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (list, tuple)):
        arr = _from_nested(spec, value)
    elif isinstance(value, (int, float, np.generic)):
        arr = _cast_python(spec, np.asarray(value))
    else:
        raise DTypeError(f"input '{spec.name}': expected a numpy array of {spec.dtype}, "
                         f"got {type(value).__name__}" + ("" if hasattr(value, "__array__") else
                                                          " (pass a numpy array or a nested list of numbers)"))
    if arr.dtype.name != spec.dtype:
        raise DTypeError(f"input '{spec.name}': expected dtype {spec.dtype}, got {arr.dtype.name} "
                         f"(convert with .astype(np.{spec.dtype}))")
    if arr.dtype.kind == "O":
        raise InputError(f"input '{spec.name}': object arrays are not tensors")
    return arr


def _from_nested(spec: TensorSpec, value: list | tuple) -> np.ndarray:
    """A (nested) list or tuple of numbers as an array of the spec's dtype. The nesting depth is checked
    against the rank first (numpy would recurse to its 64-dimension limit, or forever on a list that
    contains itself); ragged rows and non-numbers are typed errors naming where they are."""
    depth = _nesting(value, spec.rank + 1)
    if depth > spec.rank:
        raise ShapeError(f"input '{spec.name}': expected rank {spec.rank} {spec.shape_str()}, "
                         f"got a list nested at least {depth} deep")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        text = first_line(exc)
        where = _ragged(value, spec.rank)
        if where or "inhomogeneous" in text:
            raise ShapeError(f"input '{spec.name}': ragged nested list: {where or text}; the rows of a "
                             "tensor have equal lengths and depths") from None
        raise InputError(f"input '{spec.name}': this {type(value).__name__} is not a tensor: {text}") from None
    if arr.dtype.kind in "OUSV":
        raise DTypeError(f"input '{spec.name}': expected numbers of {spec.dtype}, but {_not_a_number(value)}")
    return _cast_python(spec, arr)


def _cast_python(spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    """Python numbers carry no precision of their own: floats take a float spec's dtype, integers an
    integer spec's if every value fits it (astype would silently wrap 2**40 to 0 in int32)."""
    want = np.dtype(spec.dtype)
    if arr.dtype.kind == "f" and want.kind == "f":
        return arr.astype(want)
    if arr.dtype.kind in "iu" and want.kind in "iu":
        if arr.size and arr.dtype != want:
            info, low, high = np.iinfo(want), arr.min(), arr.max()
            if low < info.min or high > info.max:
                raise DTypeError(f"input '{spec.name}': value {int(low if low < info.min else high)} does not "
                                 f"fit {spec.dtype} ({info.min} to {info.max})")
        return arr.astype(want)
    return arr


def _nesting(value: Any, limit: int) -> int:
    """How deep lists / tuples nest along their first elements (an ndarray adds its ndim), up to limit."""
    depth = 0
    while depth < limit:
        if isinstance(value, np.ndarray):
            return depth + value.ndim
        if not isinstance(value, (list, tuple)):
            return depth
        depth += 1
        if not value:
            return depth
        value = value[0]
    return depth


def _length(value: Any) -> int | None:
    """len() of a list, tuple or ndarray row; None for a scalar (or anything else)."""
    if isinstance(value, np.ndarray):
        return len(value) if value.ndim else None
    return len(value) if isinstance(value, (list, tuple)) else None


def _ragged(value: Any, rank: int, at: str = "") -> str | None:
    """Where a nested list stops being a rank-`rank` tensor: "row [1] has length 1, row [0] has length 2",
    "element [0][1] is a list, nested deeper than the rank", or None when it is rectangular."""
    if not isinstance(value, (list, tuple)):
        return None
    lengths = [_length(row) for row in value]
    if rank <= 1:
        deeper = next((i for i, n in enumerate(lengths) if n is not None), None)
        return None if deeper is None else (f"element {at}[{deeper}] is a {type(value[deeper]).__name__}, "
                                            "nested deeper than the rank")
    for i, n in enumerate(lengths):
        if n != lengths[0]:
            return f"row {at}[{i}] {_has(n)}, row {at}[0] {_has(lengths[0])}"
    for i, row in enumerate(value):
        found = _ragged(row, rank - 1, f"{at}[{i}]")
        if found:
            return found
    return None


def _has(length: int | None) -> str:
    return "is not a list" if length is None else f"has length {length}"


def _not_a_number(value: Any, at: str = "") -> str:
    """Names the first element of a nested list that is not a number: "element [0][1] is a dict ({})"."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _not_a_number(item, f"{at}[{i}]")
            if found:
                return found
        return "" if at else "its values fit no numeric dtype"
    if isinstance(value, np.ndarray):
        return "" if value.dtype.kind in "biuf" else f"element {at} is an array of {value.dtype.name}"
    if isinstance(value, (bool, float, np.bool_, np.number)):
        return ""
    if isinstance(value, int):
        return "" if -2**63 <= value < 2**64 else f"element {at} is the integer {value}, wider than 64 bits"
    if value is None:
        return f"element {at} is None"
    text = repr(value)
    return f"element {at} is a {type(value).__name__} ({text if len(text) <= 40 else text[:37] + '...'})"


def tf_input_names(names: Any) -> dict[str, str]:
    """{input name: the name a TensorFlow signature (SavedModel, TFLite) carries for it}. TF keeps only letters,
    digits and '_' in a signature's argument names: it made 'user-id' 'user_id' behind the converter's back and
    refused 'price ($)' beside another input ("non-unique argument names"). Each other character becomes '_', a
    leading digit gets 'input_' before it, and a name already taken gets '_2', '_3', ...; names TF keeps are
    unchanged. The converter names the signature so and the engines map the names back (the manifest has the
    model's own names)."""
    import re

    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_]", "_", name) or "input"
        base = f"input_{base}" if base[0].isdigit() else base
        cand, i = base, 2
        while cand in used:
            cand, i = f"{base}_{i}", i + 1
        used.add(cand)
        out[name] = cand
    return out


def tf_names_back(found: Any, names: list[str] | None) -> dict[str, str]:
    """{name in a TF signature: the model's own name} for the inputs a modelkit converter renamed for TF
    (tf_input_names of `names`, the manifest's input names); empty without them or when none was renamed."""
    if not names:
        return {}
    back = {tf: mine for mine, tf in tf_input_names(names).items() if tf != mine}
    return back if back and set(back) <= set(found) else {}
