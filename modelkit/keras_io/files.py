"""Loading .keras files safely, and reading a Keras model's Signature.

Keras' safe_mode is always on unless the caller passes trust_unsafe_code=True, which the CLI exposes
only as the loudly named `--trust-unsafe-code` flag: a .keras file with a Lambda layer carries
Python bytecode, and loading it runs that code.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .._backend import import_keras, loaded_backend
from ..errors import KERAS_CALL_FAILED, FormatError, LayerCallError, LoadError, UnsafeModelError, chained
from ..spec import Signature, TensorSpec

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# Keras classes whose weights are another framework's module, run by one Keras backend only: (backend, what it holds)
BACKEND_BOUND = {"TorchModuleWrapper": ("torch", "a torch.nn.Module")}


def is_hdf5(path: str | os.PathLike) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == HDF5_MAGIC


def check_keras_archive(path: str | os.PathLike) -> dict[str, Any]:
    """Open a .keras zip (or a legacy .h5) without running anything: check its members, return its config."""
    from ..safety.archive import check_zip_members

    p = Path(path)
    if is_hdf5(p):
        return _h5_config(p)
    try:
        with zipfile.ZipFile(p) as zf:
            check_zip_members(zf, p)
            config = json.loads(zf.read("config.json"))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, KeyError, UnicodeDecodeError, ValueError,
            EOFError, OSError, RecursionError, NotImplementedError, RuntimeError) as exc:  # RuntimeError: encrypted
        if isinstance(exc, UnsafeModelError):
            raise
        raise LoadError(f"{p}: not a readable .keras archive ({type(exc).__name__}: {exc})") from exc
    if not isinstance(config, dict):
        raise LoadError(f"{p}: config.json is not a JSON object")
    return config


def _h5_config(p: Path) -> dict[str, Any]:
    """The model_config attribute of a legacy Keras .h5 file, read with h5py (no Keras involved)."""
    try:
        import h5py
    except ImportError as exc:
        raise LoadError(f"{p}: a legacy HDF5 model needs h5py (pip install h5py)") from exc
    try:
        with h5py.File(p, "r") as f:
            raw = f.attrs.get("model_config")
        if raw is None:
            raise LoadError(f"{p}: an HDF5 file without a Keras model_config (weights only?)")
        config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except (OSError, ValueError, KeyError, RecursionError) as exc:
        if isinstance(exc, LoadError):
            raise
        raise LoadError(f"{p}: not a readable Keras HDF5 model ({type(exc).__name__}: {exc})") from exc
    if not isinstance(config, dict):
        raise LoadError(f"{p}: model_config is not a JSON object")
    return config


def _unregistered(message: str) -> str | None:
    """"the custom class 'Net' (registered as 'nc46>Net')" from Keras' "Could not locate class 'Net'. ... Full
    object config: {...}" (a dump of the whole config), else None."""
    found = re.search(r"Could not locate (class|function) '([^']+)'", message)
    # an object inside a layer's config (a regularizer, an initializer, a constraint): Keras' own words differ
    inner = None if found else re.search(r"Cannot deserialize object of type `([^`]+)`", message)
    if not found and not inner:
        return None
    kind, name = (found.group(1), found.group(2)) if found else ("class", inner.group(1))
    # the class's own config follows Keras' "Could not locate" (the dump before it is the enclosing model's); an
    # inner object's is in the dump of the layer holding it
    tail = message[found.end():] if found else message
    registered = (re.search(rf"'registered_name': '([^']*>{re.escape(name)})'", tail)
                  or (found and re.search(r"'registered_name': '([^']+)'", tail)))
    also = f" (registered as '{registered.group(1)}')" if registered and registered.group(1) != name else ""
    if f"'module': None, 'class_name': '{name}'" in message:  # defined in the script that saved it
        also += ", defined in the script that saved the model (move it to a module of its own)"
    return f"the custom {kind} '{name}'{also}"


def load_keras(path: str | os.PathLike, trust_unsafe_code: bool = False, compile: bool = False,
               backend: str | None = None, input_spec: Any = None) -> Any:
    """Load a .keras (or legacy .h5) model with Keras safe_mode on (off only with trust_unsafe_code=True).

    The config is scanned first (modelkit.safety.keras): Lambda layers, TFSMLayers and any callable
    outside Keras that is not registered in this process are refused before Keras sees the file.
    A mixed-precision model (policy mixed_float16 / mixed_bfloat16) comes back computing in float32, the
    policy it was saved with kept in `modelkit.keras_io.policy.POLICY_ATTR`.
    A model without defined inputs (subclassed) comes back wrapped in a functional model over named
    inputs: `input_spec` (or the conversion's, modelkit.keras_io.inputs), else its saved build shapes.
    """
    from ..safety.keras import check_keras_config
    from . import channels_first

    p = Path(path)
    if not p.is_file():
        raise FormatError(f"no such .keras file: {p}")
    config = check_keras_archive(p)
    bound = backend_bound(config)
    keras = import_keras(backend or (bound[2] if bound and loaded_backend() is None else None))
    if bound and keras.backend.backend() != bound[2]:
        name, cls, need = bound
        raise LoadError(f"{p}: layer '{name}' ({cls}) holds {BACKEND_BOUND[cls][1]}, which runs only under Keras' "
                        f"{need} backend, and Keras runs {keras.backend.backend()} in this process: load it with "
                        f"backend='{need}' (KERAS_BACKEND={need} before Keras is imported)")
    from .custom import import_from_env

    import_from_env()  # MODELKIT_IMPORTS: the user's modules that register custom layers and losses
    check_keras_config(config, p, trust_unsafe_code=trust_unsafe_code, compile=compile)
    if keras.backend.backend() == "tensorflow" and channels_first.needed(config):
        channels_first.install()  # TensorFlow's CPU convolutions take channels-last only
    target = p
    if is_hdf5(p) and p.suffix.lower() not in (".h5", ".hdf5"):
        raise LoadError(f"{p}: a legacy HDF5 Keras model must be named *.h5 (Keras picks the reader by suffix)")
    try:
        model = keras.saving.load_model(target, compile=compile, safe_mode=not trust_unsafe_code)
    except ValueError as exc:
        msg = str(exc)
        if "safe_mode" in msg or "Lambda" in msg or "unsafe" in msg.lower():
            raise UnsafeModelError(
                f"{p}: refused to load: the model contains code that would run on load (e.g. a Lambda "
                "layer); Keras safe mode is on. If you wrote this file yourself and trust it, pass "
                f"--trust-unsafe-code (trust_unsafe_code=True). Keras said: {msg.splitlines()[0]}") from exc
        _raise_if_unregistered(p, exc)
        raise _load_error(exc)(f"{p}: Keras could not load this model: {_keras_reason(exc, keras)}") from exc
    except (TypeError, KeyError, OSError, AttributeError, IndexError, EOFError, RecursionError, RuntimeError,
            zipfile.BadZipFile, zlib.error) as exc:  # h5py raises RuntimeError on damaged weights
        _raise_if_unregistered(p, exc)
        raise _load_error(exc)(f"{p}: Keras could not load this model: {type(exc).__name__}: "
                               f"{_keras_reason(exc, keras)}") from exc
    from .inputs import ensure_inputs
    from .policy import POLICY_ATTR, in_float32

    model = in_float32(model)  # a mixed-precision model computes in float32 (modelkit.keras_io.policy)
    _without_activity_losses(model)
    out = ensure_inputs(model, p, input_spec)
    if out is not model and hasattr(model, POLICY_ATTR):
        setattr(out, POLICY_ATTR, getattr(model, POLICY_ATTR))
    return out


def _without_activity_losses(model: Any) -> None:
    """Every layer's activity regularizer off: Keras computes it on each call, inference included, as a loss that no
    output reads, and reads the batch as a number there (it divides by `ops.cast(ops.shape(x)[0])`). That fixed the
    batch of a torch export (nc172, PointNet's orthogonal regularizer on its T-Net: "turns the batch into the traced
    size", and an ExecuTorch program planned for a batch of 3). A model loaded here only predicts."""
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if getattr(layer, "activity_regularizer", None) is not None:
            layer.activity_regularizer = None


def _raise_if_unregistered(p: Path, exc: BaseException) -> None:
    """LoadError naming the custom class Keras could not find and the flag that imports it, if that is the cause."""
    unregistered = _unregistered(str(exc))
    if unregistered:
        raise LoadError(f"{p}: Keras could not load this model: it uses {unregistered}, which no imported module "
                        "registers: pass --import with the module or .py file that defines it (imports=[...] "
                        "in Python, or MODELKIT_IMPORTS)") from exc


def backend_bound(config: dict[str, Any]) -> tuple[str, str, str] | None:
    """(layer name, class, backend) of the first Keras layer in `config` that one backend alone runs
    (BACKEND_BOUND: a TorchModuleWrapper), or None."""
    stack: list[Any] = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            cls = node.get("class_name")
            if cls in BACKEND_BOUND and str(node.get("module", "keras")).startswith("keras"):
                inner = node.get("config")
                name = inner.get("name", cls) if isinstance(inner, dict) else cls
                return str(name), str(cls), BACKEND_BOUND[cls][0]
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
    return None


def backend_for(path: str | os.PathLike) -> str | None:
    """The backend a .keras model needs when Keras is not imported yet (a TorchModuleWrapper: torch), else None."""
    if loaded_backend() is not None:
        return None
    bound = backend_bound(check_keras_archive(path))
    return bound[2] if bound else None


def _load_error(exc: BaseException) -> type[LoadError]:
    """LayerCallError when a layer raised while Keras rebuilt the model under this backend ("Exception encountered
    when calling X.call()"), else LoadError."""
    return LayerCallError if KERAS_CALL_FAILED in str(exc) else LoadError


def _keras_reason(exc: BaseException, keras: Any) -> str:
    """One line of why Keras failed. A layer that raised while the model was rebuilt says only "Exception
    encountered when calling X.call()"; its own error, which Keras puts after "Error encountered:", and the backend
    it ran under are the part a user can act on (nc77: a layer's associative_scan over an open length, saved under
    torch, fails under TensorFlow: "as_list() is not defined on an unknown TensorShape")."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    head = lines[0]
    if "could not be deserialized" in head:
        return _rebuild_reason(lines, keras) or head
    return _call_reason(head, lines, keras, exc)


def _call_reason(head: str, lines: list[str], keras: Any, exc: BaseException | None = None) -> str:
    """For "Exception encountered when calling X.call()": with the backend, and the layer's own error after Keras'
    "Error encountered:" line (nc160: a layer that ran under torch only, rebuilt under TensorFlow), else the first
    error of the chain Keras raised from (nc166: a Lambda's "could not infer the shape" hid a NameError)."""
    if KERAS_CALL_FAILED not in head:
        return head
    after = next((i for i, ln in enumerate(lines) if ln.rstrip().endswith("Error encountered:")), None)
    cause = lines[after + 1] if after is not None and after + 1 < len(lines) else ""
    root = list(chained(exc))[-1] if exc is not None else None  # the error Keras' own wrappers were raised from
    if not cause and root is not None and root is not exc:
        cause = f"{type(root).__name__}: {(str(root).strip().splitlines() or [''])[0]}"
        if "Lambda.call()" in head and isinstance(root, NameError):
            cause += (" (Keras restores a Lambda's function without the module it was written in, so a global it "
                      "uses, a module such as keras or numpy or a variable, is undefined when the model is loaded, "
                      "by keras.saving.load_model too: write the function as the call() of a registered layer in a "
                      "module of its own, passed with --import)")
    return f"{head.rstrip('.')} under the {keras.backend.backend()} backend" + (f": {cause}" if cause else "")


def _rebuild_reason(lines: list[str], keras: Any) -> str | None:
    """For Keras' nested "X could not be deserialized properly ... Exception encountered: ..." (one level per model,
    layer and config): the innermost class and its own error (nc98: RandomShear's get_config writes x_factor as
    (-0.1, 0.1), which its from_config refuses: "The `factor` argument should be a number ... Received: -0.1")."""
    text = "\n".join(lines)
    names = re.findall(r"deserializing class '(\w+)'", text) or re.findall(r"(\w+)'> could not be deserialized", text)
    causes = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Exception encountered:")]
    causes = [c for c in causes if c and "could not be deserialized" not in c and "when deserializing" not in c]
    if not names or not causes:
        return None
    return f"it could not rebuild {names[-1]} from its saved config: {_call_reason(causes[-1], lines, keras)}"


def _dtype_name(dtype: Any) -> str:
    name = getattr(dtype, "name", dtype)
    return np.dtype(str(name)).name


def keras_signature(model: Any) -> Signature:
    """The Signature of a built Keras model: input tensor names, output layer names, batch dynamic."""
    if not getattr(model, "inputs", None):
        raise LoadError("the Keras model has no defined inputs and its file records no build shapes (a "
                        "subclassed model that was never built); give them with --input-spec name:shape:dtype "
                        "(input_spec=[...]), e.g. x:?,8:float32, or call the model once before saving")
    inputs = tuple(TensorSpec(t.name, (None, *t.shape[1:]), _dtype_name(t.dtype)) for t in model.inputs)
    names = output_names(model)
    outputs = tuple(TensorSpec(n, (None, *t.shape[1:]), _dtype_name(t.dtype)) for n, t in zip(names, model.outputs))
    return Signature(inputs, outputs)


def output_names(model: Any) -> list[str]:
    """Output names: a dict of outputs' keys (what model.predict returns: Keras' own output_names are the layers'
    names, and nc94's `{"same": score, "embedding": encoder(left)}` came out as 'encoder'); else those Keras gives
    functional models, else the producing layers' names. Keras names each output after its layer, so a layer
    answering with several tensors gave one name twice, which no format can carry: then the name and a position."""
    keys = _dict_keys(model)
    if keys is not None:
        return keys
    names = getattr(model, "output_names", None)
    if names and len(names) == len(model.outputs):
        out = list(names)
    else:
        out = []
        for t in model.outputs:
            hist = getattr(t, "_keras_history", None)
            out.append(hist[0].name if hist else t.name)
    return out if len(set(out)) == len(out) else _numbered(out)


def _dict_keys(model: Any) -> list[str] | None:
    """A dict of outputs' keys in the order of model.outputs (nested keys joined by '_'), or None when the outputs
    are no dict, or the keys do not name each output once."""
    struct = getattr(model, "_outputs_struct", None)
    if not isinstance(struct, dict):
        return None
    keras = import_keras()
    keys = ["_".join(str(p) for p in path) for path, _ in keras.tree.flatten_with_path(struct)]
    return keys if len(keys) == len(model.outputs or []) and len(set(keys)) == len(keys) else None


def _numbered(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if names.count(name) > 1:
            out.append(f"{name}_{seen.get(name, 0)}")
            seen[name] = seen.get(name, 0) + 1
        else:
            out.append(name)
    return out


def call_model(model: Any, inputs: dict[str, np.ndarray], sig: Signature) -> dict[str, np.ndarray]:
    """Run the model directly (not model.predict) and return outputs keyed by output name."""
    keras = import_keras()
    return {n: np.asarray(keras.ops.convert_to_numpy(o)) for n, o in _called(model, inputs, sig).items()}


def call_model_masks(model: Any, inputs: dict[str, np.ndarray], sig: Signature) -> dict[str, np.ndarray]:
    """The Keras masks the model's outputs carry for `inputs` (an Embedding(mask_zero=True) or a Masking layer
    upstream), keyed by output name: True where a position is real, False where it is padding; outputs without
    one are left out."""
    keras = import_keras()
    from keras.src.backend.common.masking import get_keras_mask  # no public reader of a tensor's mask

    found = {n: get_keras_mask(o) for n, o in _called(model, inputs, sig).items()}
    return {n: np.asarray(keras.ops.convert_to_numpy(m)).astype(bool) for n, m in found.items() if m is not None}


def _called(model: Any, inputs: dict[str, np.ndarray], sig: Signature) -> dict[str, Any]:
    """The model's output tensors for `inputs` (a dict for a dict-input model, else positional), by output name."""
    keras = import_keras()
    args = [inputs[n] for n in sig.input_names]
    feed: Any = dict(inputs) if isinstance(getattr(model, "_inputs_struct", None), dict) else (
        args if len(args) > 1 else args[0])
    return dict(zip(sig.output_names, keras.tree.flatten(model(feed, training=False))))
