"""User code: models built by the user's own Python file, and modules that register custom objects.

`--model path/to/file.py:function` imports that file and calls the function, which returns a Keras
model. That runs the user's own code, on purpose and only when asked: it is the same trust as running
`python path/to/file.py`. Nothing here ever imports code named by a model file or a manifest.
As with `python path/to/file.py`, the file's folder goes to the front of sys.path (and stays there), so
the file can import its sibling modules, at import time or later. An exception raised by the user's
code becomes a UserCodeError naming the file and line (`modelkit --debug` shows the traceback).

Custom layers and losses registered with `keras.saving.register_keras_serializable` must be registered
in every process that loads the .keras file, including modelkit's conversion children. The modules to
import are named by `--import MODULE_OR_FILE` on every command (`imports=[...]` in Python), which
`use_imports()` adds to the environment variable MODELKIT_IMPORTS (comma-separated module names or .py
paths); child processes inherit it and `import_from_env()` imports them. A module name is looked up as
`python -m` does: the current folder first. In Python, the modules that registered custom objects in the
calling process are passed to the children too (`registered_imports()`). Training records the modules
it imported in the manifest (training.imports) so that users know what to name.
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
        return _import_by_name(spec)
    except ModelkitError:
        raise
    except Exception as exc:
        if _where(exc) is not None:  # the module was found, and its own code raised
            raise _user_error(exc, None) from exc
        raise TrainingError(f"cannot import module '{spec}' ({exc}); give a module on the Python path "
                            "or a path to a .py file") from exc


def _import_by_name(name: str) -> ModuleType:
    """importlib.import_module, with the current folder on the path as `python -m` has it (the `modelkit`
    script's own sys.path starts with its bin folder instead), added only when the name is not found."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name.split(".", 1)[0] or os.getcwd() in sys.path:
            raise
    add_to_path(Path.cwd())
    return importlib.import_module(name)


def use_imports(specs: list[str] | tuple[str, ...] | None) -> list[str]:
    """Name the user's modules (dotted names or .py paths) for this process and its children: each is
    checked to exist, .py paths made absolute, and added to MODELKIT_IMPORTS, which every .keras load
    (here and in the children, which inherit it) imports first. Returns the normalized specs.

    Nothing is imported here: a module runs when a model is loaded, as with MODELKIT_IMPORTS.
    """
    normalized = [_normalized(s) for s in (specs or ()) if s and s.strip()]
    merged = with_imports(normalized)
    if merged is not None:
        os.environ[ENV_IMPORTS] = merged
    return normalized


def with_imports(more: list[str]) -> str | None:
    """MODELKIT_IMPORTS with `more` added (each once, in the order named), or None when it names them all."""
    current = env_imports()
    merged = list(dict.fromkeys(current + more))
    return ",".join(merged) if merged != current else None


def _normalized(spec: str) -> str:
    """A .py path made absolute; a module name checked to be findable (the current folder counts)."""
    spec = spec.strip()
    if spec.endswith(".py"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UserCodeError(f"--import {spec}: no such Python file")
        return str(path.resolve())
    if not all(part.isidentifier() for part in spec.split(".")):
        raise UserCodeError(f"--import {spec}: not a module name (a.b.c) nor a path to a .py file")
    top = spec.split(".", 1)[0]
    here = Path.cwd()
    if top in sys.modules or (here / f"{top}.py").is_file() or (here / top).is_dir():
        return spec
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise UserCodeError(f"--import {spec}: no module '{top}' in the current folder or on the Python path; "
                            "give a module name or a path to a .py file")
    return spec


def registered_imports() -> tuple[list[str], list[str]]:
    """(module specs, folders for PYTHONPATH) that let a child process register the custom Keras objects this
    process has registered: the modules that define them, by name, and the folders they import from.

    Only when Keras is already imported here (nothing is imported to find out). Objects defined in the
    running script (`__main__`) cannot be imported elsewhere without running the script again: they are
    left out, and loading the model in a child then fails with the "not registered" error, which says what to do.
    """
    keras = sys.modules.get("keras")
    if keras is None:
        return [], []
    try:
        objects = list(_registry(keras).values())
    except Exception:  # noqa: BLE001 - a Keras without that registry: nothing to pass on
        return [], []
    specs: list[str] = []
    roots: list[str] = []
    for obj in objects:
        name = getattr(obj, "__module__", None)
        module = sys.modules.get(name or "")
        if module is None or name == "__main__" or name.split(".", 1)[0] in ("keras", "modelkit", "tensorflow"):
            continue
        file = getattr(module, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        if "." not in name and path.suffix == ".py" and path.stem != name:  # a .py imported under another name
            spec, root = str(path), None
        else:
            spec, root = name, str(path.parents[name.count(".") + (path.name == "__init__.py")])
        if spec not in specs:
            specs.append(spec)
        if root is not None and root not in roots:
            roots.append(root)
    return specs, roots


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
    """Import the modules named in MODELKIT_IMPORTS (a no-op when it is unset), Keras first when this process has
    not imported it: a module that sets KERAS_BACKEND before its `import keras` (a training script, nc101) would
    otherwise fix the process's backend to its own, and the hop's backend could not load (a TF child got JAX)."""
    specs = env_imports()
    if not specs:
        return []
    from .._backend import import_keras, loaded_backend

    if loaded_backend() is None:
        import_keras()
    try:
        return import_all(specs)
    finally:  # its KERAS_BACKEND would name another backend to this process's later Keras loads and its children
        os.environ["KERAS_BACKEND"] = loaded_backend() or os.environ.get("KERAS_BACKEND", "")


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
