"""Loading .keras files safely, and reading a Keras model's Signature.

Keras' safe_mode is always on unless the caller passes trust_unsafe_code=True, which the CLI exposes
only as the loudly named `--trust-unsafe-code` flag: a .keras file with a Lambda layer carries
Python bytecode, and loading it runs that code.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .._backend import import_keras
from ..errors import FormatError, LoadError, UnsafeModelError
from ..spec import Signature, TensorSpec


def check_keras_archive(path: str | os.PathLike) -> dict[str, Any]:
    """Open a .keras zip without running anything: check its members and return its config."""
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as zf:
            for info in zf.infolist():
                name = info.filename
                is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                if name.startswith("/") or ".." in Path(name).parts or is_link:
                    raise UnsafeModelError(f"{p}: archive member '{name}' escapes the archive or is a link")
            config = json.loads(zf.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as exc:
        raise LoadError(f"{p}: not a readable .keras archive ({exc})") from exc
    return config


def load_keras(path: str | os.PathLike, trust_unsafe_code: bool = False, compile: bool = False,
               backend: str | None = None) -> Any:
    """Load a .keras model with Keras safe_mode on (off only with trust_unsafe_code=True)."""
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"no such .keras file: {p}")
    check_keras_archive(p)
    keras = import_keras(backend)
    from .custom import import_from_env

    import_from_env()  # MODELKIT_IMPORTS: the user's modules that register custom layers and losses
    try:
        return keras.saving.load_model(p, compile=compile, safe_mode=not trust_unsafe_code)
    except ValueError as exc:
        msg = str(exc)
        if "safe_mode" in msg or "Lambda" in msg or "unsafe" in msg.lower():
            raise UnsafeModelError(
                f"{p}: refused to load: the model contains code that would run on load (e.g. a Lambda "
                "layer); Keras safe mode is on. If you wrote this file yourself and trust it, pass "
                f"--trust-unsafe-code (trust_unsafe_code=True). Keras said: {msg.splitlines()[0]}") from exc
        raise LoadError(f"{p}: Keras could not load this model: {msg.splitlines()[0] if msg else exc}") from exc
    except (TypeError, KeyError, OSError, AttributeError) as exc:
        raise LoadError(f"{p}: Keras could not load this model: {exc}") from exc


def _dtype_name(dtype: Any) -> str:
    name = getattr(dtype, "name", dtype)
    return np.dtype(str(name)).name


def keras_signature(model: Any) -> Signature:
    """The Signature of a built Keras model: input tensor names, output layer names, batch dynamic."""
    if not getattr(model, "inputs", None):
        raise LoadError("the Keras model has no defined inputs (a subclassed model that was never built); "
                        "build it with keras.Input or call it once before saving")
    inputs = tuple(TensorSpec(t.name, (None, *t.shape[1:]), _dtype_name(t.dtype)) for t in model.inputs)
    names = output_names(model)
    outputs = tuple(TensorSpec(n, (None, *t.shape[1:]), _dtype_name(t.dtype)) for n, t in zip(names, model.outputs))
    return Signature(inputs, outputs)


def output_names(model: Any) -> list[str]:
    """Output names: those Keras gives functional models, else the producing layers' names."""
    names = getattr(model, "output_names", None)
    if names and len(names) == len(model.outputs):
        return list(names)
    out = []
    for t in model.outputs:
        hist = getattr(t, "_keras_history", None)
        out.append(hist[0].name if hist else t.name)
    return out


def call_model(model: Any, inputs: dict[str, np.ndarray], sig: Signature) -> dict[str, np.ndarray]:
    """Run the model directly (not model.predict) and return outputs keyed by output name."""
    keras = import_keras()
    args = [inputs[n] for n in sig.input_names]
    structure = model.input if isinstance(getattr(model, "_inputs_struct", None), dict) else None
    if structure is not None:
        feed: Any = dict(inputs)
    else:
        feed = args if len(args) > 1 else args[0]
    outs = model(feed, training=False)
    flat = keras.tree.flatten(outs)
    return {n: np.asarray(keras.ops.convert_to_numpy(o)) for n, o in zip(sig.output_names, flat)}
