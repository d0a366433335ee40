"""Reference architectures, built with the Keras 3 functional API so input and output names are stable.

Every model's inputs and outputs carry the names that the rest of modelkit binds by (see
modelkit.spec.Signature); `data.model_inputs` makes matching input dicts from digit images.
Keras is imported inside the functions (backend chosen at first import; see modelkit._backend).
"""
from __future__ import annotations

from typing import Any

from .._backend import import_keras
from ..errors import TrainingError
from .catalog import MODELS, TASKS  # noqa: F401  (zoo.MODELS is the public table)

# Batch-norm moving statistics must settle within a few short epochs on small data; Keras' default
# momentum (0.99) would leave them far from the data's after ~100 steps and ruin test accuracy.
_BN_MOMENTUM = 0.9


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
    if name == "mobilenetv2":
        return _mobilenetv2(keras, num_classes, dropout, reg, seed, input_shape or (32, 32, 3), alpha)
    if name in ("mlp", "cnn", "multi_io"):
        bn = {"mlp": False}.get(name, True) if batch_norm is None else batch_norm
        builders = {"mlp": _mlp, "cnn": _cnn, "multi_io": _multi_io}
        return builders[name](keras, num_classes, dropout, reg, seed, bn, units)
    from . import zoo_more

    return zoo_more.build(keras, name, num_classes=num_classes, dropout=dropout, reg=reg, seed=seed,
                          batch_norm=batch_norm, units=units)


def classifier(keras: Any, x: Any, num_classes: int, dropout: float, reg: Any, seed: int) -> Any:
    if dropout > 0:
        x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    return keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=reg, name="probs")(x)


def conv_block(keras: Any, x: Any, filters: int, reg: Any, name: str, bn: bool = True,
               layer: str = "Conv2D") -> Any:
    """Conv (or SeparableConv2D) 3x3 'same' -> BatchNormalization (when bn) -> ReLU."""
    L = keras.layers
    reg_kw = {"depthwise_regularizer": reg, "pointwise_regularizer": reg} if layer == "SeparableConv2D" \
        else {"kernel_regularizer": reg}
    x = getattr(L, layer)(filters, 3, padding="same", use_bias=not bn, name=f"{name}_conv", **reg_kw)(x)
    if bn:
        x = L.BatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def _mlp(keras: Any, num_classes: int, dropout: float, reg: Any, seed: int, bn: bool, units: int | None) -> Any:
    L = keras.layers
    width = units or 128
    inp = keras.Input((64,), name="features")
    x = inp
    for i, n in enumerate((width, max(1, width // 2)), start=1):
        x = L.Dense(n, activation=None if bn else "relu", kernel_regularizer=reg, name=f"dense{i}")(x)
        if bn:
            x = L.BatchNormalization(momentum=_BN_MOMENTUM, name=f"dense{i}_bn")(x)
            x = L.ReLU(name=f"dense{i}_relu")(x)
    return keras.Model(inp, classifier(keras, x, num_classes, dropout, reg, seed), name="mlp")


def _cnn(keras: Any, num_classes: int, dropout: float, reg: Any, seed: int, bn: bool, units: int | None) -> Any:
    L = keras.layers
    width = units or 32
    inp = keras.Input((8, 8, 1), name="image")
    x = conv_block(keras, inp, width, reg, "block1", bn)
    x = conv_block(keras, x, width, reg, "block2", bn)
    x = L.MaxPooling2D(2, name="pool")(x)  # 4x4
    x = conv_block(keras, x, 2 * width, reg, "block3", bn)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, classifier(keras, x, num_classes, dropout, reg, seed), name="cnn")


def _multi_io(keras: Any, num_classes: int, dropout: float, reg: Any, seed: int, bn: bool,
              units: int | None) -> Any:
    L = keras.layers
    width = units or 32
    image = keras.Input((8, 8, 1), name="image")
    features = keras.Input((8,), name="features")
    x = conv_block(keras, image, width, reg, "block1", bn)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = conv_block(keras, x, 2 * width, reg, "block2", bn)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    f = L.Dense(16, activation="relu", kernel_regularizer=reg, name="features_dense")(features)
    h = L.Concatenate(name="concat")([x, f])
    h = L.Dense(64, activation="relu", kernel_regularizer=reg, name="shared_dense")(h)
    probs = classifier(keras, h, num_classes, dropout, reg, seed)
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
    out = classifier(keras, base.output, num_classes, dropout, reg, seed)
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
