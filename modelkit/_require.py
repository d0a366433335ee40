"""One optional-dependency hint: import a module or say which extra installs it (Keras' LazyModule idea)."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import EngineNotInstalledError

BACKEND_EXTRAS = {"tensorflow": "keras", "torch": "torch", "jax": "jax"}  # the extra that installs each backend


def require(module: str, extra: str, what: str | None = None) -> ModuleType:
    """`importlib.import_module(module)`, or EngineNotInstalledError naming what is missing and the extra:
    "onnxruntime is not installed (onnxruntime); pip install 'modelkit[run-onnx]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EngineNotInstalledError(f"{what or module} is not installed ({exc.name or exc}); "
                                      f"pip install 'modelkit[{extra}]'") from exc
