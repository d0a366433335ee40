"""Sequence models over the digits: lstm, gru and a small transformer encoder.

Digits become sequences by reading the image rows: input 'sequence' (8, 8) = 8 time steps of 8 pixels.
"""
from __future__ import annotations

from typing import Any

from .blocks import Options, classifier


def lstm(keras: Any, o: Options) -> Any:
    return _recurrent(keras, keras.layers.LSTM, "lstm", o)


def gru(keras: Any, o: Options) -> Any:
    return _recurrent(keras, keras.layers.GRU, "gru", o)


def _recurrent(keras: Any, layer: Any, name: str, o: Options) -> Any:
    inp = keras.Input((8, 8), name="sequence")
    # unrolled: 8 fixed time steps become straight-line ops; a symbolic while loop (TensorList ops)
    # would not lower to TFLite builtins and is harder for ONNX/TVM importers
    x = layer(o.units or 64, kernel_regularizer=o.reg, recurrent_regularizer=o.reg, seed=o.seed, unroll=True,
              name=name)(inp)
    return keras.Model(inp, classifier(keras, x, o), name=name)


def transformer(keras: Any, o: Options) -> Any:
    """One pre-classifier encoder block over the 8 rows.

    The token embedding is a Dense projection of each row's 8 pixels plus a learned positional
    embedding: EinsumDense with a kernel shared over positions ('fd') and a bias per position and
    feature ('td') is exactly `Dense(x_t) + P[t]`, with built-in layers only.
    """
    L = keras.layers
    dim = o.units or 32
    heads = 2 if dim % 2 == 0 else 1
    inp = keras.Input((8, 8), name="sequence")
    h = L.EinsumDense("btf,fd->btd", output_shape=(8, dim), bias_axes="td", kernel_regularizer=o.reg,
                      name="embed_with_positions")(inp)
    att = L.MultiHeadAttention(heads, key_dim=dim // heads, seed=o.seed, kernel_regularizer=o.reg,
                               name="attention")(h, h)
    h = L.LayerNormalization(name="attention_norm")(L.Add(name="attention_residual")([h, att]))
    ff = L.Dense(2 * dim, activation="relu", kernel_regularizer=o.reg, name="ffn1")(h)
    ff = L.Dense(dim, kernel_regularizer=o.reg, name="ffn2")(ff)
    h = L.LayerNormalization(name="ffn_norm")(L.Add(name="ffn_residual")([h, ff]))
    x = L.GlobalAveragePooling1D(name="pool")(h)
    return keras.Model(inp, classifier(keras, x, o), name="transformer")
