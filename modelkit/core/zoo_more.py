"""More reference architectures: sequence models (lstm, gru, transformer), a depthwise-separable conv
net and a conv autoencoder. All use Keras built-in layers only, so their .keras files load in safe mode
anywhere, with no modelkit code registered.

Digits become sequences by reading the image rows: input 'sequence' (8, 8) = 8 time steps of 8 pixels.
"""
from __future__ import annotations

from typing import Any

from .zoo import _BN_MOMENTUM, classifier, conv_block


def build(keras: Any, name: str, *, num_classes: int, dropout: float, reg: Any, seed: int,
          batch_norm: bool | None, units: int | None) -> Any:
    if name in ("lstm", "gru"):
        return _recurrent(keras, name, num_classes, dropout, reg, seed, units or 64)
    if name == "transformer":
        return _transformer(keras, num_classes, dropout, reg, seed, units or 32)
    if name == "separable":
        return _separable(keras, num_classes, dropout, reg, seed, True if batch_norm is None else batch_norm,
                          units or 32)
    if name == "autoencoder":
        return _autoencoder(keras, reg, True if batch_norm is None else batch_norm, units or 16)
    raise AssertionError(f"zoo_more has no builder for {name}")  # zoo.check_model ran first


def _recurrent(keras: Any, kind: str, num_classes: int, dropout: float, reg: Any, seed: int, units: int) -> Any:
    L = keras.layers
    inp = keras.Input((8, 8), name="sequence")
    layer = L.LSTM if kind == "lstm" else L.GRU
    # unrolled: 8 fixed time steps become straight-line ops; a symbolic while loop (TensorList ops)
    # would not lower to TFLite builtins and is harder for ONNX/TVM importers
    x = layer(units, kernel_regularizer=reg, recurrent_regularizer=reg, seed=seed, unroll=True, name=kind)(inp)
    return keras.Model(inp, classifier(keras, x, num_classes, dropout, reg, seed), name=kind)


def _transformer(keras: Any, num_classes: int, dropout: float, reg: Any, seed: int, dim: int) -> Any:
    """One pre-classifier encoder block over the 8 rows.

    The token embedding is a Dense projection of each row's 8 pixels plus a learned positional
    embedding: EinsumDense with a kernel shared over positions ('fd') and a bias per position and
    feature ('td') is exactly `Dense(x_t) + P[t]`, with built-in layers only.
    """
    L = keras.layers
    heads = 2 if dim % 2 == 0 else 1
    inp = keras.Input((8, 8), name="sequence")
    h = L.EinsumDense("btf,fd->btd", output_shape=(8, dim), bias_axes="td", kernel_regularizer=reg,
                      name="embed_with_positions")(inp)
    att = L.MultiHeadAttention(heads, key_dim=dim // heads, seed=seed, kernel_regularizer=reg, name="attention")(h, h)
    h = L.LayerNormalization(name="attention_norm")(L.Add(name="attention_residual")([h, att]))
    ff = L.Dense(2 * dim, activation="relu", kernel_regularizer=reg, name="ffn1")(h)
    ff = L.Dense(dim, kernel_regularizer=reg, name="ffn2")(ff)
    h = L.LayerNormalization(name="ffn_norm")(L.Add(name="ffn_residual")([h, ff]))
    x = L.GlobalAveragePooling1D(name="pool")(h)
    return keras.Model(inp, classifier(keras, x, num_classes, dropout, reg, seed), name="transformer")


def _separable(keras: Any, num_classes: int, dropout: float, reg: Any, seed: int, bn: bool, width: int) -> Any:
    L = keras.layers
    inp = keras.Input((8, 8, 1), name="image")
    x = conv_block(keras, inp, width // 2 or 1, reg, "stem", bn)  # a plain conv first: 1 channel in
    x = conv_block(keras, x, width, reg, "sep1", bn, layer="SeparableConv2D")
    x = L.MaxPooling2D(2, name="pool")(x)  # 4x4
    x = conv_block(keras, x, 2 * width, reg, "sep2", bn, layer="SeparableConv2D")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, classifier(keras, x, num_classes, dropout, reg, seed), name="separable")


def _autoencoder(keras: Any, reg: Any, bn: bool, width: int) -> Any:
    """8x8 -> 4x4 -> 2x2 code -> (Conv2DTranspose) 4x4 -> (UpSampling2D) 8x8, sigmoid pixels in [0, 1]."""
    L = keras.layers
    inp = keras.Input((8, 8, 1), name="image")
    x = conv_block(keras, inp, width, reg, "enc1", bn)
    x = L.MaxPooling2D(2, name="enc1_pool")(x)
    x = conv_block(keras, x, width // 2 or 1, reg, "enc2", bn)
    x = L.MaxPooling2D(2, name="code")(x)
    x = L.Conv2DTranspose(width // 2 or 1, 3, strides=2, padding="same", kernel_regularizer=reg,
                          name="dec1_deconv")(x)
    if bn:
        x = L.BatchNormalization(momentum=_BN_MOMENTUM, name="dec1_bn")(x)
    x = L.ReLU(name="dec1_relu")(x)
    x = L.UpSampling2D(2, name="dec2_up")(x)
    x = conv_block(keras, x, width, reg, "dec2", bn)
    out = L.Conv2D(1, 3, padding="same", activation="sigmoid", kernel_regularizer=reg, name="reconstruction")(x)
    return keras.Model(inp, out, name="autoencoder")
