"""User code: models built by the user's own Python file, and modules that register custom objects.

`--model path/to/file.py:function` imports that file and calls the function, which returns a Keras
model. That runs the user's own code, on purpose and only when asked: it is the same trust as running
`python path/to/file.py`. Nothing here ever imports code named by a model file or a manifest.
As with `python path/to/file.py`, the file's folder goes to the front of sys.path (and stays there), so
the file can import its sibling modules, at import time or later. An exception raised by the user's
code becomes a UserCodeError naming the file and line (`modelkit --debug` shows the traceback).

Custom layers and losses registered with `keras.saving.register_keras_serializable` must be registered
in every process that loads the .keras file, including modelkit's conversion children. The modules to
import are named by the environment variable MODELKIT_IMPORTS (comma-separated module names or .py
paths), which child processes inherit; `import_from_env()` imports them. Training records the modules
it imported in the manifest (training.imports) so that users know what to set.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import sysconfig
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

from ..errors import ModelkitError, TrainingError, UserCodeError

ENV_IMPORTS = "MODELKIT_IMPORTS"


def is_user_model(model: str) -> bool:
    """'file.py:function' (a user's builder) rather than a zoo name."""
    return ":" in model and model.rsplit(":", 1)[0].endswith(".py")


def import_module(spec: str) -> ModuleType:
    """Import a module by dotted name, or a .py file by path (module name: the file's stem).

    A file is imported under its stem ('examples/custom_layer.py' -> 'custom_layer'), once per
    process; importing the same file again returns the same module, so classes register once. Its
    folder is put at the front of sys.path first, as `python file.py` does. An exception raised while
    the module runs is a UserCodeError naming the file and line.
    """
    if spec.endswith(".py"):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise TrainingError(f"no such Python file: {spec}")
        name = _module_name(path)
        if name in sys.modules:
            return sys.modules[name]
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise TrainingError(f"cannot import {path} as a Python module")
        add_to_path(path.parent)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            with user_code(path):
                loader_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module
    try:
        return importlib.import_module(spec)
    except ModelkitError:
        raise
    except Exception as exc:
        if _where(exc) is not None:  # the module was found, and its own code raised
            raise _user_error(exc, None) from exc
        raise TrainingError(f"cannot import module '{spec}' ({exc}); give a module on the Python path "
                            "or a path to a .py file") from exc


def add_to_path(folder: Path) -> None:
    """Put `folder` at the front of sys.path (as `python folder/file.py` does); it stays there, so that
    the user's code can import its sibling modules later too (lazy imports inside a builder)."""
    entry = str(folder)
    if not sys.path or sys.path[0] != entry:
        sys.path.insert(0, entry)
        importlib.invalidate_caches()


@contextlib.contextmanager
def user_code(path: Path | None) -> Iterator[None]:
    """Run the user's code: an exception it raises becomes a UserCodeError naming the file and line;
    typed modelkit errors, Ctrl-C and SystemExit pass unchanged."""
    try:
        yield
    except ModelkitError:
        raise
    except Exception as exc:
        raise _user_error(exc, path) from exc


def _user_error(exc: BaseException, path: Path | None) -> UserCodeError:
    """'mybuild.py line 3: ZeroDivisionError: division by zero': where the user's code raised, else the
    user's file without a line."""
    text = " ".join(str(exc.msg if isinstance(exc, SyntaxError) else exc).split())  # msg: without "(file, line)"
    if len(text) > 400:
        text = text[:400] + "…"
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    where = _where(exc) or ((str(path), None) if path is not None else None)
    if where is None:
        return UserCodeError(what)
    line = f" line {where[1]}" if where[1] else ""
    return UserCodeError(f"{_shown(where[0])}{line}: {what}")


def _where(exc: BaseException) -> tuple[str, int | None] | None:
    """(file, line) of the innermost frame of the user's own code (not the standard library's, an
    installed package's or modelkit's); a SyntaxError names the file it is in."""
    if isinstance(exc, SyntaxError) and exc.filename and _is_user_file(exc.filename):
        return exc.filename, exc.lineno
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_user_file(f.filename)]
    return (frames[-1].filename, frames[-1].lineno) if frames else None


@functools.cache
def _library_roots() -> tuple[str, ...]:
    """Folders whose files are not the user's: the standard library, installed packages, modelkit."""
    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= {sys.prefix, sys.base_prefix, str(Path(__file__).resolve().parents[1])}  # + modelkit itself
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots if r)


def _is_user_file(filename: str) -> bool:
    if not filename or filename.startswith("<"):
        return False
    return not os.path.realpath(filename).startswith(_library_roots())


def _shown(filename: str) -> str:
    """A path relative to the working folder when it is inside it, else absolute."""
    rel = os.path.relpath(filename)
    return filename if rel.startswith("..") else rel


def _module_name(path: Path) -> str:
    """The stem, unless another file already took it: then the stem with a short hash of the path."""
    name = path.stem
    existing = sys.modules.get(name)
    if existing is None or Path(getattr(existing, "__file__", "") or "").resolve() == path:
        return name
    return f"{name}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def import_all(specs: list[str] | tuple[str, ...]) -> list[ModuleType]:
    return [import_module(s) for s in specs]


def env_imports() -> list[str]:
    return [s.strip() for s in os.environ.get(ENV_IMPORTS, "").split(",") if s.strip()]


def import_from_env() -> list[ModuleType]:
    """Import the modules named in MODELKIT_IMPORTS (a no-op when it is unset)."""
    return import_all(env_imports())


def load_builder(model: str) -> tuple[Callable[..., Any], str]:
    """The function named by 'path/to/file.py:function', and the file's absolute path."""
    path, _, func = model.rpartition(":")
    if not path or not func:
        raise TrainingError(f"a user model is 'path/to/file.py:function', got '{model}'")
    module = import_module(path)
    fn = getattr(module, func, None)
    if not callable(fn):
        raise TrainingError(f"{path} has no function '{func}'")
    return fn, str(Path(path).resolve())


def build_user_model(model: str, **hints: Any) -> Any:
    """Call the user's builder with the keyword arguments it declares among `hints`
    (num_classes, dropout, l1, l2, units, seed, batch_norm); it must return a Keras model."""
    fn, path = load_builder(model)
    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in hints.items() if v is not None and (takes_all or k in params)}
    with user_code(Path(path)):
        net = fn(**kwargs)
    from .._backend import import_keras

    keras = import_keras()
    if not isinstance(net, keras.Model):
        raise TrainingError(f"{model} returned {type(net).__name__}, not a keras.Model")
    if not getattr(net, "inputs", None):
        raise TrainingError(f"{model} returned a model without defined inputs; build it with keras.Input")
    return net


def resolve_loss(keras: Any, name: str) -> Any:
    """A loss by Keras name ('mse', 'sparse_categorical_crossentropy') or registered custom name
    ('modelkit_examples>FocalLoss', or just 'FocalLoss' when one registered object has that name)."""
    registered = keras.saving.get_registered_object(name) if ">" in name else None
    if registered is None and ">" not in name:
        matches = [k for k in _registry(keras) if k.split(">", 1)[-1] == name]
        if len(matches) == 1:
            registered = keras.saving.get_registered_object(matches[0])
        elif len(matches) > 1:
            raise TrainingError(f"loss '{name}' is ambiguous: registered as {', '.join(sorted(matches))}")
    if registered is not None:
        return registered() if inspect.isclass(registered) else registered
    try:
        return keras.losses.get(name)
    except (ValueError, TypeError) as exc:
        raise TrainingError(f"unknown loss '{name}': not a Keras loss nor a registered custom loss "
                            f"(registered: {', '.join(sorted(_registry(keras))) or 'none'}); import the "
                            "module that registers it with imports = [...] / --import") from exc


def custom_objects(keras: Any, net: Any) -> list[str]:
    """Registered names of the non-Keras layers and loss a model uses ('modelkit_examples>GatedDense')."""
    objs = [*net._flatten_layers(include_self=False), getattr(net, "loss", None)]
    names = {keras.saving.get_registered_name(type(o)) for o in objs
             if o is not None and not type(o).__module__.startswith("keras")}
    return sorted(names)


def _registry(keras: Any) -> dict[str, Any]:
    from keras.src.saving import object_registration

    return dict(object_registration.GLOBAL_CUSTOM_OBJECTS)
