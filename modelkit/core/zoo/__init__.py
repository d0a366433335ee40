"""Reference architectures, built with the Keras 3 functional API so input and output names are stable.

Every model's inputs and outputs carry the names that the rest of modelkit binds by (see
modelkit.spec.Signature); `data.model_inputs` makes matching input dicts from digit images. All use Keras
built-in layers only, so their .keras files load in safe mode anywhere, with no modelkit code registered.
Keras is imported inside the functions (backend chosen at first import; see modelkit._backend).

One table, BUILDERS, maps each name of catalog.MODELS to its builder (images.py: dense and conv nets;
sequences.py: recurrent and attention models over the image rows) and its batch-norm default.
"""
from __future__ import annotations

from typing import Any, Callable

from ..._backend import import_keras
from ...errors import TrainingError
from ..catalog import MODELS, TASKS  # noqa: F401  (zoo.MODELS is the public table)
from . import images, sequences
from .blocks import Options

# name -> (builder, batch norm when the caller does not say; None: the model has no batch-norm switch)
BUILDERS: dict[str, tuple[Callable[[Any, Options], Any], bool | None]] = {
    "mlp": (images.mlp, False),
    "cnn": (images.cnn, True),
    "multi_io": (images.multi_io, True),
    "mobilenetv2": (images.mobilenetv2, None),
    "lstm": (sequences.lstm, None),
    "gru": (sequences.gru, None),
    "transformer": (sequences.transformer, None),
    "separable": (images.separable, True),
    "autoencoder": (images.autoencoder, True),
}
assert list(BUILDERS) == list(MODELS), "zoo.BUILDERS and catalog.MODELS must name the same models"


def check_model(name: str) -> str:
    """Return `name` if it is a known model, else raise TrainingError listing the valid ones."""
    if name not in MODELS:
        raise TrainingError(f"unknown model '{name}'; valid models: {', '.join(MODELS)}")
    return name


def build_model(name: str, *, num_classes: int = 10, dropout: float = 0.0, l2: float = 0.0, seed: int = 0,
                input_shape: tuple[int, ...] | None = None, alpha: float = 0.35, l1: float = 0.0,
                batch_norm: bool | None = None, units: int | None = None) -> Any:
    """Build a reference model by name (see MODELS); returns an uncompiled keras.Model.

    `l1` / `l2` add a kernel regularizer to every Conv/Dense kernel; `dropout` adds Dropout before the
    classifier. `seed` seeds Keras' global random state, so the initial weights are reproducible.
    `batch_norm` turns the batch-norm layers of the conv nets on or off (None: each model's default:
    on for cnn, multi_io, separable and autoencoder; off for mlp, lstm, gru; transformer uses
    LayerNormalization). `units` sets the width (hidden units, filters or model dimension).
    `input_shape` and `alpha` apply to mobilenetv2 only (e.g. input_shape=(224, 224, 3) for benchmarks).
    """
    check_model(name)
    if num_classes < 2:
        raise TrainingError(f"num_classes must be at least 2, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise TrainingError(f"dropout must be in [0, 1), got {dropout}")
    if l2 < 0.0 or l1 < 0.0:
        raise TrainingError(f"l1 and l2 must be >= 0, got l1={l1}, l2={l2}")
    if units is not None and units < 1:
        raise TrainingError(f"units must be >= 1, got {units}")
    if input_shape is not None and name != "mobilenetv2":
        raise TrainingError(f"input_shape applies to mobilenetv2 only, not to '{name}'")
    keras = import_keras()
    keras.utils.set_random_seed(seed)
    if l1 > 0:
        reg = keras.regularizers.L1L2(l1=l1, l2=l2)
    else:
        reg = keras.regularizers.L2(l2) if l2 > 0 else None
    builder, bn_default = BUILDERS[name]
    bn = bn_default if batch_norm is None else batch_norm
    return builder(keras, Options(num_classes, dropout, reg, seed, bool(bn), units, input_shape, alpha))
