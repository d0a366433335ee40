"""The one traced TensorFlow function both TF-based edges (ONNX, SavedModel) export.

Inputs keep the Keras input names and a dynamic batch dimension; outputs come back in the Keras
output order, so each edge can name them after the Keras outputs.

Graph converters (tf2onnx) get the function frozen (FrozenFunction): tensors the trace captured that are
not tf.Variables (an adapted Normalization's mean and variance, any constant a layer keeps as a tensor)
would otherwise become extra graph inputs; frozen, they and the variables are constants of the graph,
whose only inputs are the model's. A SavedModel keeps such captures as constants by itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConversionError, ModelkitError
from ..spec import Signature


def serving_function(model: Any, sig: Signature, as_dict: bool) -> tuple[Any, list[Any]]:
    """(tf.function, input TensorSpecs) calling the model in inference mode. as_dict=True is the form of a SavedModel
    / TFLite signature, whose argument names TF restricts: the specs are named by modelkit.spec.tf_input_names
    (unchanged for names TF keeps); tf2onnx's form keeps the model's names, which ONNX takes as they are."""
    import keras
    import tensorflow as tf

    from ..spec import tf_input_names

    tf_names = tf_input_names(sig.input_names) if as_dict else {n: n for n in sig.input_names}
    specs = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=tf_names[s.name]) for s in sig.inputs]
    dict_inputs = isinstance(getattr(model, "_inputs_struct", None), dict)
    names = sig.output_names
    op_names = tf_input_names(names)

    def call(*args: Any) -> Any:
        if dict_inputs:
            feed: Any = dict(zip(sig.input_names, args))
        else:
            feed = list(args) if len(args) > 1 else args[0]
        outs = keras.tree.flatten(model(feed, training=False))
        if as_dict:  # the op named as TF takes names ('class probs' is no valid scope), the output by the model's
            return {n: tf.identity(o, name=op_names[n]) for n, o in zip(names, outs)}
        return [tf.identity(o) for o in outs]

    return tf.function(call, input_signature=specs, autograph=False), specs


class FrozenFunction:
    """A traced function with every captured variable and tensor folded into graph constants.

    Offers what tf2onnx's `from_function` uses (`get_concrete_function(*specs)`) and can be called.
    Lookup tables are resources that cannot be frozen; a graph holding one keeps its captures as traced
    (the support table refuses those layers for formats that cannot hold them).
    """

    def __init__(self, fn: Any, specs: list[Any]):
        self.specs = specs
        self.concrete = _freeze(fn.get_concrete_function(*specs))

    def get_concrete_function(self, *specs: Any) -> Any:
        return self.concrete

    def __call__(self, *args: Any) -> Any:
        return self.concrete(*args)


def _freeze(concrete: Any) -> Any:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    if not any(t.dtype != tf.resource for t in concrete.captured_inputs):
        return concrete  # nothing but variables and tables: tf2onnx freezes those itself
    try:
        frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    except (ValueError, TypeError, tf.errors.OpError):
        return concrete
    # the frozen graph forgets the input specs, whose names tf2onnx gives the graph inputs
    frozen.graph.structured_input_signature = concrete.graph.structured_input_signature
    return frozen


# ------------------------------------------------------------------------------------------------
# Per-process cache for the TF-based edges. `modelkit convert --to saved_model,onnx,tflite` runs the
# three hops in one TensorFlow child: without the cache each edge loads the .keras file, traces it and
# (SavedModel, TFLite) writes the very same SavedModel, and each hop's verification loads the source
# again. The cache holds one source at a time, keyed by its resolved path, its sha256 and the trust flag,
# so a changed file (or a different trust decision or input spec) is loaded and checked again from scratch.

_CACHE: dict[str, Any] = {}


def _key(src: Path, trust_unsafe_code: bool) -> tuple[str, str, bool, Any]:
    from ..keras_io.inputs import current_input_spec
    from ..manifest import sha256_of

    return (str(Path(src).resolve()), sha256_of(src), bool(trust_unsafe_code), current_input_spec())


def shared_model(src: Path, trust_unsafe_code: bool = False) -> Any:
    """The Keras model of `src` under the TensorFlow backend, loaded (with every safety check) once."""
    from ..keras_io.files import load_keras

    key = _key(src, trust_unsafe_code)
    if _CACHE.get("key") != key:
        clear_cache()
        model = load_keras(src, trust_unsafe_code=trust_unsafe_code, backend="tensorflow")
        _CACHE.update(key=key, model=model, functions={}, saved_model=None, outputs={})
    return _CACHE["model"]


def cached_model(src: Path, trust_unsafe_code: bool = False) -> Any | None:
    """The cached model of `src` if an edge already loaded it in this process, else None."""
    if not _CACHE or _CACHE.get("key") != _key(src, trust_unsafe_code):
        return None
    return _CACHE["model"]


def shared_serving_function(model: Any, sig: Signature, as_dict: bool) -> tuple[Any, list[Any]]:
    """serving_function(model, sig, as_dict), traced once per cached model. as_dict=False is the form
    graph converters take (tf2onnx): a FrozenFunction whose only inputs are the model's inputs."""
    if _CACHE.get("model") is not model:
        return _make(model, sig, as_dict)
    fns = _CACHE["functions"]
    if as_dict not in fns:
        fns[as_dict] = _make(model, sig, as_dict)
    return fns[as_dict]


def _make(model: Any, sig: Signature, as_dict: bool) -> tuple[Any, list[Any]]:
    fn, specs = serving_function(model, sig, as_dict)
    try:  # traced here (tf.function keeps the trace), so a layer that cannot be traced fails with a hint
        fn.get_concrete_function(*specs)
    except ModelkitError:
        raise
    except Exception as exc:  # a layer's own code, whatever it raises while TensorFlow traces it
        raise _trace_error(sig, exc) from exc
    return (fn, specs) if as_dict else (FrozenFunction(fn, specs), specs)


def _trace_error(sig: Signature, exc: BaseException) -> ConversionError:
    """The trace's failure, one line; with an open height, width or length, what fixes it: a layer branching in
    Python on a size needs it known in a TensorFlow graph (Keras' own resize is traced open: _tf_lowering)."""
    from ..keras_io.inputs import open_specs_text

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    msg = f"TensorFlow could not trace the model into a graph ({type(exc).__name__}: {text})"
    open_dims = [s for s in sig.inputs if any(d is None for d in s.shape[1:])]
    if open_dims:
        spec = open_dims[0]
        msg += (f"; input '{spec.name}' has open dimensions {list(spec.shape)}, which a layer may need known: fix "
                f"them when converting, e.g. {open_specs_text(sig, 64)}; the torch-based formats "
                "(pt2, torchscript) trace the model with torch and may keep them open")
    return ConversionError(msg)


def shared_saved_model(src: Path, endpoint: str, trust_unsafe_code: bool = False) -> Path:
    """A SavedModel of `src` with one `endpoint` signature (dict outputs named after the Keras outputs),
    written once per process into a private temporary folder; callers copy it or read it, never edit it."""
    from ..keras_io.files import keras_signature

    model = shared_model(src, trust_unsafe_code)
    done = _CACHE.get("saved_model")
    if done is not None and done[0] == endpoint and done[1].is_dir():
        return done[1]
    path = own_saved_model(model, endpoint, shared_serving_function(model, keras_signature(model), as_dict=True))
    _CACHE["saved_model"] = (endpoint, path)
    return path


def own_saved_model(model: Any, endpoint: str, traced: tuple[Any, list[Any]] | None = None) -> Path:
    """A SavedModel of `model` with one `endpoint` signature in a private temporary folder removed at exit, of
    `traced` (a serving function and its specs), else of a trace of its own."""
    import atexit
    import shutil
    import tempfile

    from ..keras_io.files import keras_signature

    fn, specs = traced or _make(model, keras_signature(model), as_dict=True)
    folder = Path(tempfile.mkdtemp(prefix="modelkit-saved-model-"))
    atexit.register(shutil.rmtree, folder, True)
    write_saved_model(model, endpoint, fn, specs, folder / "saved_model")
    return folder / "saved_model"


def write_saved_model(model: Any, endpoint: str, fn: Any, specs: Any, path: Path) -> None:
    """A SavedModel of `model` at `path` with `fn` as its one `endpoint`, by Keras' ExportArchive, each weight
    stored once. Keras 3.15's archive tracks the Keras variables (`variables`, `trainable_variables`, ...) and,
    apart, the TF variables the endpoint captures (`_all_variables`): two objects per weight, both saved, so
    every SavedModel was twice its weights (ConvNeXtTiny: 213.9 MB of variables for 106.4 MB of weights;
    `model.export()` does the same). The lists are pointed at the captured TF variables themselves."""
    from unittest import mock

    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    served = archive.add_endpoint(endpoint, fn, input_signature=specs)
    tracked = getattr(archive, "_tf_trackable", None)  # Keras' layout; another one is saved as it is
    for name in ("variables", "trainable_variables", "non_trainable_variables"):
        held = list(getattr(tracked, name, None) or [])
        raw = [getattr(v, "_value", v) for v in held]  # a TF-backend Keras Variable keeps its tf.Variable there
        if held and all(isinstance(v, tf.Variable) for v in raw):
            setattr(tracked, name, raw)
    own = getattr(archive, "_filter_and_track_resources", None)
    if own is None:  # pragma: no cover - another Keras layout
        archive.write_out(str(path), verbose=False)
        return

    def resources() -> None:
        own()
        tracked._misc_assets = _read_tables(model, served, getattr(tracked, "_misc_assets", []))

    with mock.patch.object(archive, "_filter_and_track_resources", resources):
        archive.write_out(str(path), verbose=False)


def _read_tables(model: Any, served: Any, resources: list[Any]) -> list[Any]:
    """`resources` (the lookup tables Keras' archive keeps) less each table of an IntegerLookup that the endpoint
    does not read: traced as comparisons (_lookup.py), its lookup table would still be saved with its initializer,
    HashTableV2 and LookupTableImportV2, which TFLite has no builtins for (and an adapted one's counts with it)."""
    from tensorflow.saved_model.experimental import TrackableResource

    tables = {id(value) for layer in model._flatten_layers(include_self=False)  # noqa: SLF001
              if type(layer).__name__ == "IntegerLookup"
              for value in vars(layer).values() if isinstance(value, TrackableResource)}
    if not tables:
        return resources
    captured = {id(t) for t in served.get_concrete_function().captured_inputs}
    return [r for r in resources if id(r) not in tables or id(getattr(r, "resource_handle", None)) in captured]


def clear_cache() -> None:
    import shutil

    done = _CACHE.get("saved_model")
    if done is not None:
        shutil.rmtree(done[1].parent, ignore_errors=True)
    _CACHE.clear()


class MemoReference:
    """A runtime Model (the verification reference) whose predictions are remembered by input content:
    every hop of one conversion verifies against the same seeded inputs, so the source runs them once.
    Outputs are handed out as copies; inputs are hashed in full (shape, dtype and bytes)."""

    def __init__(self, model: Any):
        self.model = model
        self.signature = model.signature
        self.path = model.path
        self.format = model.format
        self.engine = model.engine
        self._memo: dict[Any, dict[str, Any]] = _CACHE.setdefault("outputs", {}) if _CACHE else {}

    def predict(self, inputs: Any) -> dict[str, Any]:
        import hashlib

        import numpy as np

        if not isinstance(inputs, dict) or not all(isinstance(v, np.ndarray) for v in inputs.values()):
            return self.model.predict(inputs)
        key = tuple(sorted((k, v.shape, v.dtype.str, hashlib.blake2b(np.ascontiguousarray(v).tobytes(),
                                                                     digest_size=16).digest())
                           for k, v in inputs.items()))
        if key not in self._memo:
            self._memo[key] = self.model.predict(inputs)
        return {k: v.copy() for k, v in self._memo[key].items()}

    __call__ = predict

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)
