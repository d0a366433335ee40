"""One Keras backend function swapped for an exporter-friendly one while a model is traced (_warp.py, _search.py)."""
from __future__ import annotations

import contextlib
import importlib
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def backend_patch(backend: str, module: str, name: str, make: Callable[[Any], Any]) -> Iterator[None]:
    """`keras.src.backend.<backend>.<module>.<name>` replaced by `make(keras_own)` inside the block; nothing is
    patched under a Keras layout without it."""
    from unittest import mock

    try:
        mod = importlib.import_module(f"keras.src.backend.{backend}.{module}")
    except ImportError:  # pragma: no cover - another Keras layout: nothing to patch
        yield
        return
    own = getattr(mod, name, None)
    if own is None:  # pragma: no cover
        yield
        return
    with mock.patch.object(mod, name, make(own)):
        yield


@contextlib.contextmanager
def layer_call_patch(module: str, name: str, make: Callable[[Any], Any]) -> Iterator[None]:
    """`keras.src.layers.<module>.<name>.call` replaced by `make(keras_own)` inside the block (_lookup.py,
    _time_distributed.py); nothing is patched under a Keras layout without it."""
    from unittest import mock

    try:
        layer = getattr(importlib.import_module(f"keras.src.layers.{module}"), name)
    except (ImportError, AttributeError):  # pragma: no cover - another Keras layout: nothing to patch
        yield
        return
    with mock.patch.object(layer, "call", make(layer.call)):
        yield
