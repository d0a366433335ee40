"""Inputs for Keras models that do not define them: subclassed models (`class M(keras.Model)` with `call()`).

Such a model, built by calling it on data and saved, has no `model.inputs` after loading; its input
shapes survive only in the saved build config (`build_config.input_shape`: one shape, a list of shapes or
a dict of shapes). `as_functional` wraps the loaded model into a functional model over named
`keras.Input`s taken from an explicit input spec (`--input-spec name:shape:dtype`, `input_spec=`) or
from those build shapes (dtype float32, batch dynamic), so every edge and runtime sees ordinary named
inputs. Outputs are named after a dict output's keys, else `output_0`, `output_1`, ... in call order.

A model that defines its inputs takes an input spec only to fix dimensions it leaves open (`fix_open_dims`:
a sequence length to unroll a recurrent layer at); the artifacts then take that size.

A conversion hands its input spec to every hop's process with `using_input_spec`, which load_keras reads.
"""
from __future__ import annotations

import contextlib
import inspect
import os
from typing import Any, Iterable, Iterator

from ..errors import InputError, LoadError, first_line
from ..spec import TensorSpec

_OVERRIDE: tuple[TensorSpec, ...] | None = None


def parse_input_spec(item: str | TensorSpec | dict[str, Any]) -> TensorSpec:
    """'x:?,8:float32' -> TensorSpec('x', (None, 8), 'float32'); the shape includes the batch ('?').

    `?` (or -1, None) marks a dynamic dimension; the dtype defaults to float32.
    """
    if isinstance(item, TensorSpec):
        spec = item
    elif isinstance(item, dict):
        spec = _checked(lambda: TensorSpec.from_dict(item), str(item))
    else:
        text = str(item).strip()
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise InputError(f"input spec '{text}': expected name:shape[:dtype], e.g. x:?,8:float32 "
                             "('?' for a dynamic dimension, the first one being the batch)")
        dims = tuple(_dim(d, text) for d in parts[1].split(","))
        spec = _checked(lambda: TensorSpec(parts[0], dims, parts[2] if len(parts) == 3 else "float32"), text)
    if not spec.shape or spec.shape[0] is not None:
        raise InputError(f"input spec '{spec.name}': the first dimension is the batch and must be dynamic "
                         f"('?'), got {spec.shape_str()}")
    return spec


def input_spec_text(spec: TensorSpec, fill: int | None = None) -> str:
    """The `--input-spec` value that gives `spec`, e.g. 'tokens:?,64:int32': the batch '?', an open dimension
    `fill` (an example size; '?' when None), a fixed one its size."""
    dims = ",".join("?" if i == 0 or (d is None and fill is None) else str(fill if d is None else d)
                    for i, d in enumerate(spec.shape))
    return f"{spec.name}:{dims}:{spec.dtype}"


def open_specs_text(sig: Any, fill: int) -> str:
    """'--input-spec ...' for every input with an open dimension past the batch, each at `fill`: naming only the first
    left a graph network's adjacency (N, N) open beside its features fixed at (64, F), which Keras cannot rebuild
    (nc185); one size for all keeps dims the model ties together in agreement."""
    return " ".join(f"--input-spec {input_spec_text(s, fill=fill)}" for s in sig.inputs
                    if any(d is None for d in s.shape[1:]))


def parse_input_specs(items: Iterable[str | TensorSpec | dict[str, Any]] | str | None) -> tuple[TensorSpec, ...]:
    """Several specs (a list, or one string); names must be unique."""
    if items is None:
        return ()
    specs = tuple(parse_input_spec(i) for i in ([items] if isinstance(items, (str, TensorSpec, dict)) else items))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InputError(f"input spec names must be unique, got {names}")
    return specs


def _dim(text: str, where: str) -> int | None:
    t = text.strip()
    if t in ("?", "None", "none", "-1", ""):
        return None
    try:
        value = int(t)
    except ValueError:
        raise InputError(f"input spec '{where}': dimension '{t}' is not an integer or '?'") from None
    if value <= 0:
        raise InputError(f"input spec '{where}': dimension {value} must be positive (or '?')")
    return value


def _checked(make: Any, where: str) -> TensorSpec:
    try:
        return make()
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"input spec '{where}': {exc}") from None


@contextlib.contextmanager
def using_input_spec(specs: Iterable[Any] | None) -> Iterator[None]:
    """Within the block, load_keras gives models without inputs these inputs (None: no override)."""
    global _OVERRIDE
    before = _OVERRIDE
    _OVERRIDE = (parse_input_specs(specs) or None) if specs is not None else None
    try:
        yield
    finally:
        _OVERRIDE = before


def current_input_spec() -> tuple[TensorSpec, ...] | None:
    return _OVERRIDE


def has_inputs(model: Any) -> bool:
    return bool(getattr(model, "inputs", None))


def build_structure(model: Any) -> tuple[str, tuple[TensorSpec, ...]] | None:
    """('single' | 'list' | 'dict', specs) from the shapes the model was built with, or None."""
    shapes = getattr(model, "_build_shapes_dict", None)
    if not isinstance(shapes, dict) or len(shapes) != 1:
        return None
    arg = next(iter(shapes))
    value = next(iter(shapes.values()))
    name = _call_arg_name(model) or arg.removesuffix("_shape") or "x"
    if isinstance(value, dict) and value and all(_is_shape(v) for v in value.values()):
        return "dict", tuple(_spec(str(k), v) for k, v in value.items())
    if _is_shape(value):
        return "single", (_spec(name, value),)
    if isinstance(value, (list, tuple)) and value and all(_is_shape(v) for v in value):
        return "list", tuple(_spec(f"{name}_{i}", v) for i, v in enumerate(value))
    return None


def _is_shape(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) >= 1 and all(d is None or isinstance(d, int) for d in value)


def _spec(name: str, shape: Any) -> TensorSpec:
    return TensorSpec(name, (None, *shape[1:]), "float32")


def _call_arg_name(model: Any) -> str | None:
    try:
        params = [p for p in inspect.signature(model.call).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return None
    return params[0].name if params else None


def ensure_inputs(model: Any, where: str | os.PathLike, specs: Iterable[Any] | None = None) -> Any:
    """`model` itself when it defines its inputs, else a functional wrapper over named inputs taken from
    `specs` (or the process's input spec), else from its build shapes; unchanged when neither is known
    (keras_signature then says how to pass an input spec)."""
    given = parse_input_specs(specs) if specs is not None else current_input_spec()
    if has_inputs(model):
        return fix_open_dims(model, given, where) if given else model
    built = build_structure(model)
    if given:
        was_built = bool(getattr(model, "built", False))
        wrapped = as_functional(model, _kind_for(given, built, where), given, where)
        if not was_built:  # Keras skipped the weights of the unbuilt model: load them now that it is built
            _load_weights(model, where)
        return wrapped
    if built is None:
        return model
    return as_functional(model, built[0], built[1], where)


def fix_open_dims(model: Any, given: tuple[TensorSpec, ...], where: str | os.PathLike) -> Any:
    """A model that defines its inputs, with dimensions it leaves open fixed by `given` (a sequence length to
    unroll at: frames:?,12,6; one input of several, the others as the model has them): a functional wrapper over
    inputs of those shapes calling `model` (same layers, same weights, same input and output names). Anything else
    an input spec would change is refused."""
    import keras

    from .files import output_names

    names = [getattr(t, "name", "?") for t in model.inputs]
    by_name = {s.name: s for s in given}
    asked = [(tuple(t.shape), str(keras.backend.standardize_dtype(t.dtype)), by_name[n])
             for n, t in zip(names, model.inputs) if n in by_name]
    # specs the model's shapes already meet may come beside the one that fixes a size (a full list of the inputs)
    fixes = (set(by_name) <= set(names) and all(_compatible(*x) for x in asked)
             and any(_narrows(shape, spec) for shape, _, spec in asked))
    if not fixes:
        raise InputError(f"{where}: the model defines its inputs {names}; an input spec is only for models "
                         "that do not (subclassed models), or to fix dimensions they leave open (inputs of those "
                         "names, the same ranks and dtypes, e.g. a sequence length to unroll at; the inputs not "
                         "named keep their shapes): drop --input-spec / input_spec")
    tensors = [keras.Input(batch_shape=by_name[n].shape, dtype=by_name[n].dtype, name=n) if n in by_name
               else keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=n) for n, t in zip(names, model.inputs)]
    feed: Any = (dict(zip(names, tensors)) if isinstance(getattr(model, "_inputs_struct", None), dict)
                 else tensors[0] if len(tensors) == 1 else tensors)
    try:
        outs = keras.tree.flatten(model(feed, training=False))
    except Exception as exc:  # noqa: BLE001 - the user's layers at the sizes asked for: one typed line
        others = [f"'{n}' {tuple(t.shape)}" for n, t in zip(names, model.inputs)
                  if n not in by_name and any(d is None for d in tuple(t.shape)[1:])]
        also = (f"; a size the model ties across inputs must be fixed in each: name the others with an open size too "
                f"({', '.join(others)})") if others else ""
        raise InputError(f"{where}: the model does not build at the input shapes "
                         f"{', '.join(f'{n} {s.shape_str()}' for n, s in by_name.items())} ({type(exc).__name__}: "
                         f"{first_line(exc)}){also}") from exc
    named = [keras.layers.Identity(name=n)(t) for n, t in zip(output_names(model), outs)]
    return keras.Model(inputs=feed, outputs=named[0] if len(named) == 1 else named, name=model.name)


def _compatible(shape: tuple[Any, ...], dtype: str, spec: TensorSpec) -> bool:
    """Whether `spec` keeps `shape`'s rank, dtype and fixed dims."""
    return (len(spec.shape) == len(shape) and spec.dtype == dtype
            and all(d is None or s == d for s, d in zip(spec.shape[1:], shape[1:])))


def _narrows(shape: tuple[Any, ...], spec: TensorSpec) -> bool:
    """Whether `spec` fixes at least one open non-batch dim of `shape`."""
    return any(d is None and s is not None for s, d in zip(spec.shape[1:], shape[1:]))


def _load_weights(model: Any, where: str | os.PathLike) -> None:
    try:
        model.load_weights(os.fspath(where))
    except (ValueError, KeyError, OSError, TypeError) as exc:
        text = str(exc).strip().splitlines()
        raise LoadError(f"{where}: the model was saved unbuilt and its weights do not fit the inputs given by the "
                        f"input spec: {text[0] if text else type(exc).__name__}") from exc


def _kind_for(given: tuple[TensorSpec, ...], built: tuple[str, tuple[TensorSpec, ...]] | None,
              where: str | os.PathLike) -> str:
    if built is not None and len(built[1]) != len(given):
        raise InputError(f"{where}: the model was built with {len(built[1])} input(s) "
                         f"({', '.join(s.name for s in built[1])}); the input spec names {len(given)}")
    if built is not None and built[0] == "dict":
        want = sorted(s.name for s in built[1])
        if sorted(s.name for s in given) != want:
            raise InputError(f"{where}: the model takes a dict of inputs {want}; the input spec names "
                             f"{[s.name for s in given]}")
        return "dict"
    if built is not None:
        return built[0]
    return "single" if len(given) == 1 else "list"


def as_functional(model: Any, kind: str, specs: tuple[TensorSpec, ...], where: str | os.PathLike) -> Any:
    """A functional keras.Model over `specs` that calls `model` (same layers, same weights)."""
    import keras

    tensors = [keras.Input(batch_shape=s.shape, dtype=s.dtype, name=s.name) for s in specs]
    feed: Any = {s.name: t for s, t in zip(specs, tensors)} if kind == "dict" else (
        tensors[0] if kind == "single" else tensors)
    try:
        out = model(feed, training=False)
    except Exception as exc:  # noqa: BLE001 - the user's call() may raise anything; report it typed
        text = str(exc).strip().splitlines()
        raise LoadError(f"{where}: calling the model on inputs "
                        f"{', '.join(f'{s.name}: {s.dtype}{s.shape_str()}' for s in specs)} failed: "
                        f"{type(exc).__name__}: {text[0] if text else ''}; give its inputs with --input-spec "
                        "name:shape:dtype") from exc
    if isinstance(out, dict):
        names = sorted(str(k) for k in out)  # keras.tree.flatten order
        flat = [out[k] for k in sorted(out)]
    else:
        flat = keras.tree.flatten(out)
        names = [f"output_{i}" for i in range(len(flat))]
    named = [keras.layers.Identity(name=n)(t) for n, t in zip(names, flat)]
    return keras.Model(inputs=feed, outputs=named[0] if len(named) == 1 else named, name=model.name)
