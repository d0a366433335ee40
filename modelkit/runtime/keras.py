"""Keras engine: runs a .keras model directly (model(x), not model.predict) under this process's backend."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..formats import Format
from ..keras_io.ranges import keras_id_ranges
from .base import Model, parse_device, precheck
from .id_ranges import as_bounds
from .memory import check_headroom, guard_load


class KerasModel(Model):
    format = Format.KERAS

    def __init__(self, path: Path, model: Any):
        from .._backend import loaded_backend
        from ..keras_io.files import keras_signature

        self.model = model
        self.engine = f"keras/{loaded_backend()}"
        super().__init__(path, keras_signature(model))
        # ids past an Embedding's table: an error on TensorFlow and torch; on JAX NaN (id 25 of 20), or row 19 (id -1)
        self.id_ranges = as_bounds(keras_id_ranges(model, self.signature), self.signature)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..keras_io.files import call_model

        check_headroom(self, inputs)  # TensorFlow aborts the process when an allocation fails
        return call_model(self.model, inputs, self.signature)

    def masks(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The Keras masks of the outputs that carry one (True: a real position, False: padding)."""
        from ..keras_io.files import call_model_masks

        bound = self.signature.bind(precheck(inputs))
        check_headroom(self, bound)
        return call_model_masks(self.model, bound, self.signature)


@guard_load("keras")
def load(path: Path, device: str = "cpu", threads: int | None = None, trust_unsafe_code: bool = False,
         backend: str | None = None, **options: Any) -> KerasModel:
    parse_device(device, ("cpu",))
    from .._backend import import_keras
    from ..keras_io.files import backend_for, load_keras

    backend = backend or backend_for(path)  # a model holding a torch.nn.Module loads under torch
    import_keras(backend)
    if threads:
        set_tf_threads(threads)
    return KerasModel(path, load_keras(path, trust_unsafe_code=trust_unsafe_code, backend=backend))


def set_tf_threads(threads: int) -> None:
    """Set TensorFlow's thread pools if TensorFlow is in use and not yet initialised."""
    import sys

    if "tensorflow" not in sys.modules:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already initialised its pools: keep them, threads is a hint
        pass
