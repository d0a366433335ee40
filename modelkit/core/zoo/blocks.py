"""The pieces every zoo model shares: its options, the conv block and the classifier head."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Batch-norm moving statistics must settle within a few short epochs on small data; Keras' default
# momentum (0.99) would leave them far from the data's after ~100 steps and ruin test accuracy.
BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class Options:
    """What build_model resolved for a builder: regularizer built, batch norm decided, widths optional."""
    num_classes: int
    dropout: float
    reg: Any  # a keras regularizer or None
    seed: int
    bn: bool
    units: int | None
    input_shape: tuple[int, ...] | None
    alpha: float


def classifier(keras: Any, x: Any, o: Options) -> Any:
    """Dropout (when asked) and the softmax head named 'probs'."""
    if o.dropout > 0:
        x = keras.layers.Dropout(o.dropout, seed=o.seed, name="dropout")(x)
    return keras.layers.Dense(o.num_classes, activation="softmax", kernel_regularizer=o.reg, name="probs")(x)


def conv_block(keras: Any, x: Any, filters: int, reg: Any, name: str, bn: bool = True,
               layer: str = "Conv2D") -> Any:
    """Conv (or SeparableConv2D) 3x3 'same' -> BatchNormalization (when bn) -> ReLU."""
    L = keras.layers
    reg_kw = {"depthwise_regularizer": reg, "pointwise_regularizer": reg} if layer == "SeparableConv2D" \
        else {"kernel_regularizer": reg}
    x = getattr(L, layer)(filters, 3, padding="same", use_bias=not bn, name=f"{name}_conv", **reg_kw)(x)
    if bn:
        x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def regularize(keras: Any, model: Any, reg: Any) -> None:
    """Attach a regularizer to the kernels of already-built Conv / Dense layers (applications take none)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            layer.depthwise_regularizer = reg
            layer.kernel.regularizer = reg
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            layer.kernel_regularizer = reg
            layer.kernel.regularizer = reg
