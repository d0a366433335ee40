"""Reference architectures, built with the Keras 3 functional API so input and output names are stable.

Every model's inputs and outputs carry the names that the rest of modelkit binds by (see
modelkit.spec.Signature); `data.model_inputs` makes matching input dicts from digit images.
Keras is imported inside the functions (backend chosen at first import; see modelkit._backend).
"""
from __future__ import annotations

from typing import Any

from .._backend import import_keras
from ..errors import TrainingError

# name -> one-line description (shown by `modelkit train --help`)
MODELS: dict[str, str] = {
    "mlp": "dense network; input 'features' (64,), output 'probs'",
    "cnn": "small conv net with batch norm; input 'image' (8, 8, 1), output 'probs'",
    "multi_io": "two inputs 'image' (8, 8, 1) + 'features' (8,); outputs 'probs' and 'intensity' (1,)",
    "mobilenetv2": "keras.applications.MobileNetV2 (random init, alpha 0.35); input 'image' (32, 32, 3), "
                   "output 'probs'",
}

# Batch-norm moving statistics must settle within a few short epochs on small data; Keras' default
# momentum (0.99) would leave them far from the data's after ~100 steps and ruin test accuracy.
_BN_MOMENTUM = 0.9


def check_model(name: str) -> str:
    """Return `name` if it is a known model, else raise TrainingError listing the valid ones."""
    if name not in MODELS:
        raise TrainingError(f"unknown model '{name}'; valid models: {', '.join(MODELS)}")
    return name


def build_model(name: str, *, num_classes: int = 10, dropout: float = 0.0, l2: float = 0.0, seed: int = 0,
                input_shape: tuple[int, ...] | None = None, alpha: float = 0.35) -> Any:
    """Build a reference model by name (see MODELS); returns an uncompiled keras.Model.

    `l2` adds an L2 kernel regularizer to every Conv/Dense kernel; `dropout` adds Dropout before the
    classifier. `seed` seeds Keras' global random state, so the initial weights are reproducible.
    `input_shape` and `alpha` apply to mobilenetv2 only (e.g. input_shape=(224, 224, 3) for benchmarks).
    """
    check_model(name)
    if num_classes < 2:
        raise TrainingError(f"num_classes must be at least 2, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise TrainingError(f"dropout must be in [0, 1), got {dropout}")
    if l2 < 0.0:
        raise TrainingError(f"l2 must be >= 0, got {l2}")
    if input_shape is not None and name != "mobilenetv2":
        raise TrainingError(f"input_shape applies to mobilenetv2 only, not to '{name}'")
    keras = import_keras()
    keras.utils.set_random_seed(seed)
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    builders = {"mlp": _mlp, "cnn": _cnn, "multi_io": _multi_io}
    if name == "mobilenetv2":
        return _mobilenetv2(keras, num_classes, dropout, reg, seed, input_shape or (32, 32, 3), alpha)
    return builders[name](keras, num_classes, dropout, reg, seed)


def _classifier(keras: Any, x: Any, num_classes: int, dropout: float, reg: Any, seed: int) -> Any:
    if dropout > 0:
        x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    return keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=reg, name="probs")(x)


def _conv_block(keras: Any, x: Any, filters: int, reg: Any, name: str) -> Any:
    L = keras.layers
    x = L.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg, name=f"{name}_conv")(x)
    x = L.BatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def _mlp(keras: Any, num_classes: int, dropout: float, reg: Any, seed: int) -> Any:
    L = keras.layers
    inp = keras.Input((64,), name="features")
    x = L.Dense(128, activation="relu", kernel_regularizer=reg, name="dense1")(inp)
    x = L.Dense(64, activation="relu", kernel_regularizer=reg, name="dense2")(x)
    return keras.Model(inp, _classifier(keras, x, num_classes, dropout, reg, seed), name="mlp")


def _cnn(keras: Any, num_classes: int, dropout: float, reg: Any, seed: int) -> Any:
    L = keras.layers
    inp = keras.Input((8, 8, 1), name="image")
    x = _conv_block(keras, inp, 32, reg, "block1")
    x = _conv_block(keras, x, 32, reg, "block2")
    x = L.MaxPooling2D(2, name="pool")(x)  # 4x4
    x = _conv_block(keras, x, 64, reg, "block3")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, _classifier(keras, x, num_classes, dropout, reg, seed), name="cnn")


def _multi_io(keras: Any, num_classes: int, dropout: float, reg: Any, seed: int) -> Any:
    L = keras.layers
    image = keras.Input((8, 8, 1), name="image")
    features = keras.Input((8,), name="features")
    x = _conv_block(keras, image, 32, reg, "block1")
    x = L.MaxPooling2D(2, name="pool")(x)
    x = _conv_block(keras, x, 64, reg, "block2")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    f = L.Dense(16, activation="relu", kernel_regularizer=reg, name="features_dense")(features)
    h = L.Concatenate(name="concat")([x, f])
    h = L.Dense(64, activation="relu", kernel_regularizer=reg, name="shared_dense")(h)
    probs = _classifier(keras, h, num_classes, dropout, reg, seed)
    # the regression head sees the shared trunk and the raw features (a skip connection)
    skip = L.Concatenate(name="intensity_in")([h, features])
    intensity = L.Dense(1, kernel_regularizer=reg, name="intensity")(skip)
    # outputs as a list (not a dict): the order is the Signature's, and Keras names them by layer
    return keras.Model([image, features], [probs, intensity], name="multi_io")


def _mobilenetv2(keras: Any, num_classes: int, dropout: float, reg: Any, seed: int,
                 input_shape: tuple[int, ...], alpha: float) -> Any:
    if len(input_shape) != 3 or min(input_shape[:2]) < 32 or input_shape[2] != 3:
        raise TrainingError(f"mobilenetv2 needs an input_shape (H, W, 3) with H, W >= 32, got {input_shape}")
    inp = keras.Input(tuple(input_shape), name="image")
    # weights=None: random init, never a download. Built on our input tensor so the model is flat.
    base = keras.applications.MobileNetV2(input_tensor=inp, alpha=alpha, include_top=False, weights=None,
                                          pooling="avg")
    if reg is not None:
        _regularize(keras, base, reg)
    out = _classifier(keras, base.output, num_classes, dropout, reg, seed)
    return keras.Model(inp, out, name="mobilenetv2")


def _regularize(keras: Any, model: Any, reg: Any) -> None:
    """Attach an L2 regularizer to the kernels of already-built Conv layers (applications take none)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            layer.depthwise_regularizer = reg
            layer.kernel.regularizer = reg
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            layer.kernel_regularizer = reg
            layer.kernel.regularizer = reg
