"""The one traced TensorFlow function both TF-based edges (ONNX, SavedModel) export.

Inputs keep the Keras input names and a dynamic batch dimension; outputs come back in the Keras
output order, so each edge can name them after the Keras outputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..spec import Signature


def serving_function(model: Any, sig: Signature, as_dict: bool) -> tuple[Any, list[Any]]:
    """(tf.function, input TensorSpecs) calling the model in inference mode."""
    import keras
    import tensorflow as tf

    specs = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in sig.inputs]
    dict_inputs = isinstance(getattr(model, "_inputs_struct", None), dict)
    names = sig.output_names

    def call(*args: Any) -> Any:
        if dict_inputs:
            feed: Any = dict(zip(sig.input_names, args))
        else:
            feed = list(args) if len(args) > 1 else args[0]
        outs = keras.tree.flatten(model(feed, training=False))
        if as_dict:
            return {n: tf.identity(o, name=n) for n, o in zip(names, outs)}
        return [tf.identity(o) for o in outs]

    return tf.function(call, input_signature=specs, autograph=False), specs


# ------------------------------------------------------------------------------------------------
# Per-process cache for the TF-based edges. `modelkit convert --to saved_model,onnx,tflite` runs the
# three hops in one TensorFlow child: without the cache each edge loads the .keras file, traces it and
# (SavedModel, TFLite) writes the very same SavedModel, and each hop's verification loads the source
# again. The cache holds one source at a time, keyed by its resolved path, its sha256 and the trust flag,
# so a changed file (or a different trust decision) is loaded and checked again from scratch.

_CACHE: dict[str, Any] = {}


def _key(src: Path, trust_unsafe_code: bool) -> tuple[str, str, bool]:
    from ..manifest import sha256_of

    return (str(Path(src).resolve()), sha256_of(src), bool(trust_unsafe_code))


def shared_model(src: Path, trust_unsafe_code: bool = False) -> Any:
    """The Keras model of `src` under the TensorFlow backend, loaded (with every safety check) once."""
    from ..core.keras_io import load_keras

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
    """serving_function(model, sig, as_dict), traced once per cached model."""
    if _CACHE.get("model") is not model:
        return serving_function(model, sig, as_dict)
    fns = _CACHE["functions"]
    if as_dict not in fns:
        fns[as_dict] = serving_function(model, sig, as_dict)
    return fns[as_dict]


def shared_saved_model(src: Path, endpoint: str, trust_unsafe_code: bool = False) -> Path:
    """A SavedModel of `src` with one `endpoint` signature (dict outputs named after the Keras outputs),
    written once per process into a private temporary folder; callers copy it or read it, never edit it."""
    import atexit
    import shutil
    import tempfile

    import keras

    from ..core.keras_io import keras_signature

    model = shared_model(src, trust_unsafe_code)
    done = _CACHE.get("saved_model")
    if done is not None and done[0] == endpoint and done[1].is_dir():
        return done[1]
    folder = Path(tempfile.mkdtemp(prefix="modelkit-saved-model-"))
    atexit.register(shutil.rmtree, folder, True)
    fn, specs = shared_serving_function(model, keras_signature(model), as_dict=True)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(endpoint, fn, input_signature=specs)
    archive.write_out(str(folder / "saved_model"), verbose=False)
    _CACHE["saved_model"] = (endpoint, folder / "saved_model")
    return folder / "saved_model"


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
