"""modelkit: one toolchain to convert, verify, compile, run and serve Keras models.

The public API is light to import: heavy engines load only when a function needs them.
"""
from __future__ import annotations

from typing import Any

from . import errors
from .errors import ModelkitError
from .formats import Format, detect
from .spec import Signature, TensorSpec

__version__ = "0.1.0"
__all__ = ["load", "convert", "compile", "verify", "detect", "Format", "Signature", "TensorSpec", "ModelkitError",
           "errors", "__version__"]


def load(path: Any, device: str = "cpu", threads: int | None = None, **options: Any) -> Any:
    """Load any artifact and return a runtime Model (see modelkit.runtime.load)."""
    from .runtime import load as _load

    return _load(path, device=device, threads=threads, **options)


def convert(source: Any, to: Any, **options: Any) -> Any:
    """Convert a model to one or more formats, verifying each hop (see modelkit.converters.convert)."""
    from .converters import convert as _convert

    return _convert(source, to, **options)


def compile(model: Any, target: Any = "server-cpu", **options: Any) -> Any:  # noqa: A001 - the public name
    """Compile a .keras or ONNX model with TVM for a named target (see modelkit.targets.compile)."""
    from .targets import compile as _compile

    return _compile(model, target, **options)


def verify(a: Any, b: Any, **options: Any) -> Any:
    """Compare two artifacts on the same seeded inputs (see modelkit.converters.verify.verify_artifacts)."""
    from .converters.verify import verify_artifacts

    return verify_artifacts(a, b, **options)
