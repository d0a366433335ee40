"""Keras backend selection. A Keras backend is fixed per process, at the first `import keras`."""
from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Any

from ._require import BACKEND_EXTRAS, require
from .errors import BackendError

BACKENDS = ("tensorflow", "torch", "jax")
DEFAULT_BACKEND = "tensorflow"
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "GRPC_VERBOSITY": "ERROR"}


def quiet_engines() -> None:
    """QUIET_ENV in this process's environment where the user set nothing else, before TensorFlow loads: its C++
    log lines (oneDNN, absl) stay off."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise BackendError(f"unknown Keras backend '{name}'; valid backends: {', '.join(BACKENDS)}")
    return name


def loaded_backend() -> str | None:
    """The backend of the Keras already imported in this process, or None if Keras is not imported."""
    if "keras" not in sys.modules:
        return None
    return sys.modules["keras"].backend.backend()


def requested_backend() -> str:
    return loaded_backend() or os.environ.get("KERAS_BACKEND", DEFAULT_BACKEND)


def import_keras(backend: str | None = None) -> ModuleType:
    """Import Keras with the given backend (default: KERAS_BACKEND or tensorflow).

    Raises BackendError if Keras is already loaded with another backend in this process: the caller
    should run the work in a child process instead (see modelkit._child).
    """
    want = check_backend(backend or os.environ.get("KERAS_BACKEND", DEFAULT_BACKEND))
    have = loaded_backend()
    if have is not None and have != want:
        raise BackendError(f"Keras is already loaded with backend '{have}' in this process; "
                           f"'{want}' needs a child process")
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    os.environ["KERAS_BACKEND"] = want
    if want != "jax":
        skip_jax_at_keras_import()
    if want != "tensorflow":  # the backend's own framework first: Keras imports it at its first import
        require(want, BACKEND_EXTRAS[want], f"Keras with the {want} backend")
    keras = require("keras", BACKEND_EXTRAS[want], f"Keras with the {want} backend")
    if want == "torch":
        _dotted_layer_names_tracked()
    return keras


def _dotted_layer_names_tracked() -> None:
    """Keras' torch backend registers each variable as a torch parameter keyed by its path ('click.prob/kernel'),
    and torch refuses a '.' in a parameter's name, so a model with a weighted layer named 'click.prob' (legal under
    TensorFlow and JAX, nc56) could not even load under torch ("parameter name can't contain '.'"). The keys get
    '__' for '.'; nothing reads a variable back by that key but these three methods (Keras 3.15)."""
    from keras.src.backend.torch import layer as torch_layer

    cls = torch_layer.TorchLayer
    if getattr(cls, "_modelkit_keys", False) or not all(
            hasattr(cls, m) for m in ("_track_variables", "_post_track_variable", "_post_untrack_variable")):
        return
    import torch

    def key(variable: Any) -> str:
        return variable.path.replace(".", "__")

    def _track_variables(self: Any) -> None:
        self._torch_params = torch.nn.ParameterDict({key(v): v.value for v in self.variables})

    def _post_track_variable(self: Any, variable: Any) -> None:
        if hasattr(self, "_torch_params") and key(variable) not in self.torch_params:
            self.torch_params[key(variable)] = variable.value

    def _post_untrack_variable(self: Any, variable: Any) -> None:
        if hasattr(self, "_torch_params") and key(variable) in self.torch_params:
            self.torch_params.pop(key(variable))

    cls._track_variables, cls._post_track_variable = _track_variables, _post_track_variable
    cls._post_untrack_variable, cls._modelkit_keys = _post_untrack_variable, True


# Modules that import jax at their own import only in case it is wanted later, and catch the ImportError:
# Keras' orbax callback (to patch `jax.monitoring` of old JAX releases) under every backend, and TensorFlow's
# TFLite utilities (for TFLiteConverter.experimental_from_jax, which modelkit does not use).
_JAX_PROBES = frozenset({"keras.src.callbacks.orbax_checkpoint", "tensorflow.lite.python.util"})


class _JaxlessProbes:
    """An import hook that makes `import jax` the ImportError that each of _JAX_PROBES catches, while that module
    loads. Under tensorflow or torch those imports are ~0.5 s of CPU in every process that imports Keras (a tenth
    of a conversion child's start) for nothing. JAX imported before, or later by anything else, is untouched."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in _JAX_PROBES or "jax" in sys.modules:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            sys.modules["jax"] = None  # type: ignore[assignment]  # `import jax` raises ImportError
            try:
                run(module)
            finally:
                if "jax" in sys.modules and sys.modules["jax"] is None:
                    del sys.modules["jax"]

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]  # this spec's own loader
        return spec


def skip_jax_at_keras_import() -> None:
    """Install _JaxlessProbes (once per process), before Keras is imported with a backend other than jax."""
    if not any(isinstance(f, _JaxlessProbes) for f in sys.meta_path):
        sys.meta_path.insert(0, _JaxlessProbes())
