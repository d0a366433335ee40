"""Edge keras -> saved_model: a TF SavedModel with a `serving_default` signature (TF Serving's).

Inputs keep the Keras input names and outputs the Keras output names; the batch and every other
dimension the Keras model leaves open (a sequence length, an image side) stay dynamic.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..formats import Format
from .registry import Tolerance, converter

# The same TF kernels run on both sides; differences come only from graph-mode fusion.
TOLERANCE = Tolerance(atol=1e-5, min_cosine=0.99999)


@converter(Format.KERAS, Format.SAVED_MODEL, backend="tensorflow", tolerance=TOLERANCE)
def keras_to_saved_model(src: Path, dest: Path, trust_unsafe_code: bool = False) -> dict[str, Any]:
    import shutil

    import keras
    import tensorflow as tf

    from ._tf_function import shared_saved_model
    from ._tf_lowering import lowerings

    # the SavedModel is written once per process and source; the TFLite edge converts the same one
    with lowerings():
        saved = shared_saved_model(src, "serving_default", trust_unsafe_code)
    shutil.copytree(saved, dest)
    return {"versions": {"tensorflow": tf.__version__, "keras": keras.__version__}}
