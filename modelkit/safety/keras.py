"""A scan of a Keras model config (config.json of a .keras zip, model_config of a legacy .h5) done
before Keras sees the file.

Keras 3.15's safe_mode refuses `__lambda__`, Lambda and TFSMLayer, and NON_MODELING_APIS such as
keras.config.enable_unsafe_deserialization. This scan refuses those too (with modelkit's own typed
message), and adds what safe_mode leaves to the loader: every serialized object must name a class or
function of keras / keras_hub / keras_cv / keras_nlp, a Keras builtin function, or an object registered
in this process (keras.saving.register_keras_serializable, MODELKIT_IMPORTS). A `module` such as `os`,
`subprocess`, `builtins` (for a class) or `importlib` is refused, whatever the trust flag says; so are
Keras' file, config and saving APIs (keras.utils.get_file, keras.config.*, keras.saving.*).

trust_unsafe_code=True lifts only what Keras' safe_mode guards (Lambda, `__lambda__`, TFSMLayer), and a
TFSMLayer's filepath must still stay inside the model file's folder: nothing lifts the path checks.
"""
from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any, Iterator

from ..errors import UnsafeModelError

KERAS_PACKAGES = frozenset({"keras", "keras_hub", "keras_cv", "keras_nlp"})
# Internal markers Keras' serializer writes for values, not for callables.
VALUE_MARKERS = frozenset({"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__",
                           "__slice__"})
# `__typespec__` is not a value: Keras imports `module` and calls `<spec_name>._deserialize`. Only
# TensorFlow's own TypeSpec classes (TensorSpec, RaggedTensorSpec, ...) may appear there.
TYPESPEC_ROOTS = ("tensorflow.", "keras.")
CODE_CLASSES = frozenset({"Lambda", "__lambda__"})  # carry Python bytecode
# Keras APIs that touch files, the network or the loader's own safety switches; never a model part.
DENIED_PREFIXES = ("keras.config.", "keras.saving.", "keras.models.load_model", "keras.models.model_from",
                   "keras.models.save_model", "keras.utils.get_file", "keras.utils.", "keras.backend.",
                   "keras.preprocessing.", "keras.src.saving.", "keras.src.legacy.saving.",
                   "keras.src.utils.file_utils.", "keras.src.backend.config.", "keras.export.",
                   "keras.src.export.", "keras.src.utils.", "keras.callbacks.", "keras.src.callbacks.")
DENIED_MODULE_ROOTS = frozenset({"keras.utils", "keras.src.utils", "keras.config", "keras.saving",
                                 "keras.src.saving", "keras.backend", "keras.callbacks", "keras.src.callbacks"})


def check_keras_config(config: Any, source: str | os.PathLike, trust_unsafe_code: bool = False,
                       compile: bool = False) -> None:
    """Raise UnsafeModelError if the config names code Keras would run or an arbitrary callable."""
    src = Path(source)
    registered = _registered_lookup()
    for node, where in _objects(config, "config", skip_compile=not compile):
        class_name = node.get("class_name")
        if not isinstance(class_name, str):
            raise UnsafeModelError(f"{src}: {where}: class_name must be a string, got {class_name!r}")
        if class_name in VALUE_MARKERS:
            continue
        if class_name == "__typespec__":
            _check_typespec(src, where, node)
            continue
        module = node.get("module")
        reg = node.get("registered_name")
        inner = node.get("config")
        if class_name in CODE_CLASSES or (isinstance(inner, dict) and inner.get("function_type") == "lambda"):
            if not trust_unsafe_code:
                raise UnsafeModelError(
                    f"{src}: refused to load: {where} is a '{class_name}' that carries Python code which would "
                    "run on load; Keras safe mode is on. If you wrote this file yourself and trust it, pass "
                    "--trust-unsafe-code (trust_unsafe_code=True)")
            continue
        if class_name == "TFSMLayer":
            _check_tfsm(src, where, inner, trust_unsafe_code)
            continue
        if class_name == "function":
            name = inner if isinstance(inner, str) else None
            if name is None:
                raise UnsafeModelError(f"{src}: {where}: a function reference without a name ({inner!r})")
            if registered(name) or registered(reg):
                continue
            if module == "builtins":
                if name in vars(builtins) or name.startswith("_"):
                    raise UnsafeModelError(f"{src}: refused to load: {where} names the Python builtin "
                                           f"'{name}', not a Keras function")
                continue  # Keras resolves these names in its own activations / losses / metrics only
            _check_module(src, where, module, name, registered, reg)
            continue
        if registered(reg) or (module is None and registered(class_name)):
            continue
        if module is None:
            continue  # resolvable only through the registry of this process: Keras refuses the rest
        _check_module(src, where, module, class_name, registered, reg)
    from .keras_size import check_weight_sizes

    check_weight_sizes(config, src)  # ResourceError before Keras allocates weights the config makes huge


def _check_typespec(src: Path, where: str, node: dict) -> None:
    module, name = node.get("module"), node.get("spec_name")
    if (isinstance(module, str) and isinstance(name, str) and module.startswith(TYPESPEC_ROOTS)
            and name.isidentifier() and name.endswith("Spec") and not name.startswith("_")):
        return
    raise UnsafeModelError(f"{src}: refused to load: {where} is a __typespec__ naming '{module}.{name}', not a "
                           "TensorFlow TypeSpec class (Keras would import that module and call it)")


def _check_module(src: Path, where: str, module: Any, name: str, registered: Any, reg: Any) -> None:
    if not isinstance(module, str) or not module:
        raise UnsafeModelError(f"{src}: {where}: module must be a string, got {module!r}")
    package = module.split(".", 1)[0]
    full = f"{module}.{name}"
    if package not in KERAS_PACKAGES:
        raise UnsafeModelError(
            f"{src}: refused to load: {where} names '{full}', a callable outside Keras that is not registered "
            "in this process (only keras, keras_hub, keras_cv and keras_nlp objects, or classes registered "
            "with keras.saving.register_keras_serializable, may appear in a model config; if it is your own "
            "class, register it and name its module with --import MODULE_OR_FILE, imports=[...] in Python, or "
            "MODELKIT_IMPORTS)")
    if (full.startswith(DENIED_PREFIXES) or module in DENIED_MODULE_ROOTS
            or any(module.startswith(r + ".") for r in DENIED_MODULE_ROOTS) or name.startswith("_")):
        raise UnsafeModelError(f"{src}: refused to load: {where} names '{full}', a Keras file, config or "
                               "saving API, not a model part")


def _check_tfsm(src: Path, where: str, inner: Any, trust: bool) -> None:
    filepath = inner.get("filepath") if isinstance(inner, dict) else None
    if not trust:
        raise UnsafeModelError(
            f"{src}: refused to load: {where} is a TFSMLayer that loads another SavedModel "
            f"({filepath!r}) and runs its graph; Keras safe mode is on. Pass --trust-unsafe-code "
            "(trust_unsafe_code=True) only for your own files")
    from .paths import check_relative_member

    folder = src.resolve().parent
    if not isinstance(filepath, str) or not filepath:
        raise UnsafeModelError(f"{src}: {where}: TFSMLayer without a filepath")
    target = Path(filepath)
    rel = os.path.relpath(target.resolve(), folder) if target.is_absolute() else filepath
    check_relative_member(folder, rel, what=f"{where}: TFSMLayer filepath")


def _objects(node: Any, where: str, skip_compile: bool) -> Iterator[tuple[dict, str]]:
    """Every dict with a class_name inside node (iteratively: a hostile config may nest deeply)."""
    stack = [(node, where)]
    seen = 0
    while stack:
        cur, path = stack.pop()
        seen += 1
        if seen > 5_000_000:
            raise UnsafeModelError(f"config too large to check ({path})")
        if isinstance(cur, dict):
            if "class_name" in cur:
                yield cur, path
            for k, v in cur.items():
                if skip_compile and k == "compile_config":
                    continue  # not deserialized when compile=False
                if isinstance(v, (dict, list)):
                    stack.append((v, f"{path}.{k}"))
        elif isinstance(cur, list):
            for i, v in enumerate(cur):
                if isinstance(v, (dict, list)):
                    stack.append((v, f"{path}[{i}]"))


def _registered_lookup() -> Any:
    """name -> True if a Keras custom object of that name is registered in this process."""
    import sys

    if "keras" not in sys.modules:
        return lambda name: False
    from keras.saving import get_registered_object

    def registered(name: Any) -> bool:
        return isinstance(name, str) and bool(name) and get_registered_object(name) is not None

    return registered
