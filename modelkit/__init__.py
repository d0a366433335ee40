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


def _use(imports: Any) -> None:
    """`imports=[...]`: the user's modules that register custom Keras objects, for this process and its children
    (the modules that registered them in this process are passed on without it)."""
    if imports:
        from .keras_io.custom import use_imports

        use_imports([imports] if isinstance(imports, str) else list(imports))


def load(path: Any, device: str = "cpu", threads: int | None = None, imports: Any = None, **options: Any) -> Any:
    """Load any artifact and return a runtime Model (see modelkit.runtime.load)."""
    from .runtime import load as _load

    _use(imports)
    return _load(path, device=device, threads=threads, **options)


def convert(source: Any, to: Any, imports: Any = None, **options: Any) -> Any:
    """Convert a model to one or more formats, verifying each hop (see modelkit.converters.convert)."""
    from .converters import convert as _convert

    _use(imports)
    return _convert(source, to, **options)


def compile(model: Any, target: Any = "server-cpu", imports: Any = None, **options: Any) -> Any:  # noqa: A001
    """Compile a .keras or ONNX model with TVM for a named target (see modelkit.targets.compile)."""
    from .targets import compile as _compile

    _use(imports)
    return _compile(model, target, **options)


def verify(a: Any, b: Any, imports: Any = None, **options: Any) -> Any:
    """Compare two artifacts on the same seeded inputs (see modelkit.converters.verify.verify_artifacts)."""
    from .converters.verify import verify_artifacts

    _use(imports)
    return verify_artifacts(a, b, **options)
