"""`keras.ops.image.affine_transform` written as gathers, for every exporter (nc81: a spatial transformer).

Keras' TensorFlow backend warps with ImageProjectiveTransformV3, which tf2onnx cannot write ("No Op registered") and
TFLite has no builtin for; its torch backend warps each image in a Python loop over the batch, which fixes the batch
in torch.export and torch.jit.trace alike. So a model whose localisation net predicts a transform per image only
converted to SavedModel. Here the same sampling is built from arithmetic on coordinate grids and one gather per
corner of the bilinear box (GATHER in TFLite, Gather in ONNX, index_select in torch), with the batch index from a
cumulative sum so no size is read as a number.

The numbers are those of the backend being exported. TensorFlow: an output pixel (y, x) samples the input at
x' = (a0 x + a1 y + a2) / k, y' = (b0 x + b1 y + b2) / k, k = c0 x + c1 y + 1, and nearest rounds halves away from
zero. Keras' torch (and JAX) code differs where c0, c1 are not 0: it does not divide, and adds c1 * channel to x',
c0 * channel to y' (each channel of a pixel sampled apart); nearest rounds halves to even. So the coordinates here
have a channel axis, and one gather per bilinear corner reads single values. A corner outside the image reads
`fill_value` in both. Other fill modes (reflect, wrap, nearest) and interpolations go to Keras' own code.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable


def gathered_warps(backend: str) -> contextlib.AbstractContextManager[None]:
    """Patch `keras.src.backend.<backend>.image.affine_transform` (backend: tensorflow or torch) for the
    duration of an export."""
    from ._keras_patch import backend_patch

    return backend_patch(backend, "image", "affine_transform",
                         lambda own: gathered_affine_transform(own, torch_like=backend == "torch"))


def gathered_affine_transform(keras_own: Callable[..., Any], torch_like: bool) -> Callable[..., Any]:
    """Keras' affine_transform signature; constant fill with bilinear or nearest sampling by gathers, the rest by
    `keras_own`."""

    def affine_transform(images: Any, transform: Any, interpolation: str = "bilinear", fill_mode: str = "constant",
                         fill_value: float = 0, data_format: str | None = None) -> Any:
        from keras import backend, ops

        rank = len(ops.shape(images))
        if fill_mode != "constant" or interpolation not in ("bilinear", "nearest") or rank not in (3, 4):
            return keras_own(images, transform, interpolation=interpolation, fill_mode=fill_mode,
                             fill_value=fill_value, data_format=data_format)
        channels_first = (data_format or backend.image_data_format()) == "channels_first"
        x = images if rank == 4 else ops.expand_dims(images, 0)
        if channels_first:
            x = ops.transpose(x, (0, 2, 3, 1))
        t = ops.cast(transform, "float32")
        t = t if len(ops.shape(t)) == 2 else ops.expand_dims(t, 0)
        out = _warp(x, t, interpolation == "bilinear", float(fill_value), torch_like)
        if channels_first:
            out = ops.transpose(out, (0, 3, 1, 2))
        return out if rank == 4 else ops.squeeze(out, 0)

    return affine_transform


def _warp(images: Any, t: Any, bilinear: bool, fill: float, torch_like: bool) -> Any:
    """(b, h, w, c) images sampled where the (b or 1, 8) transforms map each output value."""
    from keras import backend, ops

    _, h, w, c = ops.shape(images)
    xx = ops.reshape(ops.cast(ops.arange(w), "float32"), (1, 1, -1, 1))
    yy = ops.reshape(ops.cast(ops.arange(h), "float32"), (1, -1, 1, 1))
    ch = ops.reshape(ops.arange(c, dtype="int32"), (1, 1, 1, -1))

    def p(i: int) -> Any:
        return ops.reshape(t[:, i], (-1, 1, 1, 1))

    if torch_like:  # Keras' torch and JAX code: c0, c1 scale the channel index, with no division
        chf = ops.cast(ch, "float32")
        x_in = p(1) * yy + p(0) * xx + p(7) * chf + p(2)
        y_in = p(4) * yy + p(3) * xx + p(6) * chf + p(5)
    else:  # TensorFlow's kernel: a projective map, one location for every channel
        k = p(6) * xx + p(7) * yy + 1.0
        x_in = (p(0) * xx + p(1) * yy + p(2)) / k
        y_in = (p(3) * xx + p(4) * yy + p(5)) / k
    # one value per row: Keras' torch `take` of a 2-D table along axis 0 is an embedding lookup (of a 1-D one, an
    # index_select and a squeeze that torch.onnx writes as a Squeeze of the gathered axis: it failed at batch > 1)
    flat = ops.reshape(ops.cast(images, "float32"), (-1, 1))
    # each image's first pixel, from a running count of the batch (no batch size read as a number)
    first = ops.cast(ops.cumsum(ops.ones_like(images[:, :1, :1, :1], dtype="float32"), axis=0), "int32") - 1
    first = first * (h * w)

    def read(yi: Any, xi: Any) -> Any:
        valid = (yi >= 0) & (yi <= ops.cast(h - 1, "float32")) & (xi >= 0) & (xi <= ops.cast(w - 1, "float32"))
        pixel = ops.cast(ops.where(valid, yi * ops.cast(w, "float32") + xi, 0.0), "int32") + first
        got = ops.reshape(ops.take(flat, ops.reshape(pixel * c + ch, (-1,)), axis=0), (-1, h, w, c))
        return ops.where(valid, got, fill)

    if not bilinear:
        rounded = _round_even if torch_like else _round_away
        yn, xn = rounded(y_in), rounded(x_in)
        out = read(yn, xn)
    else:
        y0, x0 = ops.floor(y_in), ops.floor(x_in)
        y1, x1 = y0 + 1.0, x0 + 1.0
        top = (x1 - x_in) * read(y0, x0) + (x_in - x0) * read(y0, x1)
        bottom = (x1 - x_in) * read(y1, x0) + (x_in - x0) * read(y1, x1)
        out = (y1 - y_in) * top + (y_in - y0) * bottom
    return ops.cast(out, backend.standardize_dtype(images.dtype))


def _round_even(v: Any) -> Any:
    """torch.round: halves to even (by floor: ExecuTorch has no kernel for aten.round.decimals, which ops.round
    calls)."""
    from keras import ops

    r = ops.floor(v + 0.5)
    odd_tie = ((r - v) == 0.5) & ((r - 2.0 * ops.floor(r * 0.5)) == 1.0)
    return ops.where(odd_tie, r - 1.0, r)


def _round_away(v: Any) -> Any:
    """std::round: halves away from zero (TensorFlow's nearest sampling)."""
    from keras import ops

    return ops.sign(v) * ops.floor(ops.abs(v) + 0.5)
