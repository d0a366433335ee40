"""Keras backend selection. A Keras backend is fixed per process, at the first `import keras`."""
from __future__ import annotations

import os
import sys
from types import ModuleType

from ._require import BACKEND_EXTRAS, require
from .errors import BackendError

BACKENDS = ("tensorflow", "torch", "jax")
DEFAULT_BACKEND = "tensorflow"
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "GRPC_VERBOSITY": "ERROR"}


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
    if want != "tensorflow":  # the backend's own framework first: Keras imports it at its first import
        require(want, BACKEND_EXTRAS[want], f"Keras with the {want} backend")
    return require("keras", BACKEND_EXTRAS[want], f"Keras with the {want} backend")
