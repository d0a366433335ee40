"""TF SavedModel engine: calls the `serving_default` signature (the one TF Serving uses).

A SavedModel's graphs run while it loads (resource initializers) and on every predict, so they are scanned
first (modelkit.safety.graph): file, Python and network ops are refused unless trust_unsafe_code=True.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import manifest as _manifest
from ..errors import LoadError, first_line
from ..formats import Format
from ..spec import Signature, TensorSpec, tf_names_back
from .base import Model, order_outputs, parse_device
from .memory import check_headroom, guard_load

SIGNATURE_KEY = "serving_default"


class SavedModelModel(Model):
    format = Format.SAVED_MODEL
    engine = "tensorflow"

    def __init__(self, path: Path, loaded: Any, fn: Any):
        self._loaded = loaded  # keeps variables alive
        self.fn = fn
        m = _manifest.read(path)
        self._tf_names = tf_names_back(fn.structured_input_signature[1], m.sig.input_names if m else None)
        in_specs = {self._tf_names.get(n, n): s for n, s in fn.structured_input_signature[1].items()}
        self._tf_names = {mine: tf for tf, mine in self._tf_names.items()}  # model's name -> the signature's
        in_order = order_outputs(sorted(in_specs), m.sig.input_names if m else None)
        out_specs = fn.structured_outputs
        out_order = order_outputs(sorted(out_specs), m.sig.output_names if m else None)
        sig = Signature(tuple(_spec(n, in_specs[n]) for n in in_order),
                        tuple(_spec(n, out_specs[n]) for n in out_order))
        super().__init__(path, sig)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        check_headroom(self, inputs)  # TensorFlow aborts the process when an allocation fails
        try:
            out = self.fn(**{self._tf_names.get(k, k): tf.constant(v) for k, v in inputs.items()})
        except tf.errors.OpError as exc:  # inputs were validated: a failure here is the graph's (corrupt);
            # ResourceExhaustedError (memory) becomes ResourceError in Model.predict
            raise LoadError(f"{self.path}: TensorFlow failed running this SavedModel: "
                            f"{first_line(exc)}") from exc
        return {n: out[n].numpy() for n in self.signature.output_names}


def _spec(name: str, ts: Any) -> TensorSpec:
    dims = ts.shape.as_list() if ts.shape.rank is not None else []
    return TensorSpec(name, tuple(dims), ts.dtype.as_numpy_dtype().dtype.name)


@guard_load("tensorflow")
def load(path: Path, device: str = "cpu", threads: int | None = None, trust_unsafe_code: bool = False,
         **options: Any) -> SavedModelModel:
    parse_device(device, ("cpu",))
    from .._backend import quiet_engines

    quiet_engines()
    import tensorflow as tf

    if threads:
        from .keras import set_tf_threads

        set_tf_threads(threads)
    from google.protobuf.message import Error as ProtobufError

    from ..safety.graph import check_saved_model

    check_saved_model(path, trust_unsafe_code=trust_unsafe_code)  # before TensorFlow runs any of its graphs

    # A corrupt saved_model.pb fails deep inside TF's Python loader with whatever it hits first.
    corrupt = (OSError, ValueError, RuntimeError, tf.errors.OpError, KeyError, TypeError, AttributeError,
               IndexError, AssertionError, NotImplementedError, ProtobufError)
    try:
        loaded = tf.saved_model.load(str(path))
        sigs = getattr(loaded, "signatures", {})
        if SIGNATURE_KEY not in sigs:
            raise LoadError(f"{path}: no '{SIGNATURE_KEY}' signature (found: {', '.join(sigs) or 'none'})")
        return SavedModelModel(path, loaded, sigs[SIGNATURE_KEY])
    except LoadError:
        raise
    except corrupt as exc:
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise LoadError(f"{path}: TensorFlow could not load this SavedModel: {type(exc).__name__}: {text}") from exc
