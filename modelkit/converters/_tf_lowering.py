"""Lowerings patched in while the TensorFlow-based edges (ONNX, SavedModel, TFLite) trace a Keras model.

Keras' TensorFlow backend builds the causal attention mask of `MultiHeadAttention(...,
use_causal_mask=True)` as `band_part(ones((T, S)))[None, None]`. With a dynamic sequence length the
StridedSlice that adds the two axes has no TFLite builtin lowering, so the TFLite converter refuses the
model. `lowerings()` swaps in the same mask built from two ranges compared with broadcasting
(RANGE, RESHAPE, GREATER_EQUAL: builtins at any length). The values are identical, and every hop is
verified against its source like any other. All three edges trace under it, because they share one
traced function per process (modelkit.converters._tf_function).

3-D pooling (MaxPooling3D, AveragePooling3D) traces to MaxPool3D / AvgPool3D, which TFLite lacks; it is
traced as 2-D pooling over height and width, then over depth (the same numbers: the box is separable).

A grouped convolution (Conv2D(groups=g); keras.applications' ConvNeXt writes its depthwise convolutions so) runs
inside tf.function(jit_compile=True) in Keras' TF backend, which tf2onnx cannot see into; it is traced as a
depthwise convolution or one convolution per group (the same sums).

`keras.ops.argmax` / `argmin` over floats is traced as TF's own (Keras tells -0.0 from 0.0 by bit operations that
neither TFLite nor ONNX has): a model that answers with its class id converts.

`keras.ops.image.resize` to a size computed from an open height or width (UpSampling2D(interpolation="bilinear")
of a fully convolutional model, a layer resizing to `2 * ops.shape(x)[1]`) checks `size[0] <= 0` in Python, which
a graph tensor cannot answer; with a size that holds tensors the checks are skipped and Keras' own resize runs.

`keras.ops.repeat` by a whole number along an axis (UpSampling2D's nearest mode) is traced as expand, tile and a
reshape to a shape whose known dims are constants: tf.repeat's own reshape target, computed from the input's shape,
left the TFLite converter every dim unknown, the channels too, and the convolution after a U-Net's skip
concatenation of any image size had no builtin (nc73: "TF Select ops: Conv2D").

`keras.ops.scan` (a custom layer's recurrence) is traced as a while loop over plain tensors
(modelkit.converters._tf_scan): Keras' own keeps its carry in a TensorList that neither tf2onnx nor TFLite's
builtins take (nc77).

`keras.ops.rfft` over a known frame length (up to MAX_DFT), and `keras.ops.stft` (MelSpectrogram, STFTSpectrogram),
are traced as two matrix products with the cosines and negated sines of the frequencies (modelkit.converters._tf_fft;
tf2onnx has no RFFT over an open number of frames: "No Op registered for RFFT"), and
`keras.ops.image.rgb_to_hsv` as TensorFlow's own kernel's arithmetic (max, min, selects; tf2onnx has no RGBToHSV,
TFLite no builtin): a spectral feature layer and a colour feature layer convert (nc78); `hsv_to_rgb` likewise
(clipped distances from the hue's sixths, nc157). An antialiased resize, and the lanczos / area methods, as two
matrix products (modelkit.converters._tf_resize; ScaleAndTranslate has no ONNX op and no TFLite builtin, nc158).
`keras.ops.slice_update` at int start indices as gathers and a select (modelkit.converters._tf_slice_update;
tf2onnx has no XlaDynamicUpdateSlice, nc159); `keras.ops.switch` at a constant index as the branch it picks
(modelkit.converters._tf_switch; tf2onnx has no _SwitchN, nc161). Greedy `keras.ops.ctc_decode` as elementwise
ops and cumulative sums (modelkit.converters._ctc_greedy; CTCGreedyDecoder has no TFLite builtin, nc163).
The complex FFTs (`keras.ops.fft`, `fft2`, `ifft2`: FNet's token mixing) as products with the DFT's tables,
over open axes too (modelkit.converters._complex_dft; tf2onnx has no Complex, TFLite no FFT2D, nc164).

`keras.ops.quantile` / `median` compute their indices in float32 (modelkit.converters._tf_quantile; Keras' float64
arithmetic over an open length has no TFLite builtin: nc79's median over time).

`keras.ops.image.affine_transform` (a spatial transformer's warp) is traced as gathers (modelkit.converters._warp):
ImageProjectiveTransformV3 has no ONNX op and no TFLite builtin (nc81); `keras.ops.searchsorted` over a 1-D sequence as
comparisons and a count (modelkit.converters._search; UpperBound / LowerBound have neither: nc82).

`keras.ops.roll` by whole numbers is traced as slices and a concat (a gather over an open axis): TF's Roll has no
TFLite builtin (nc87: a token-shift layer of a small vision transformer). `keras.ops.cumprod` over floats as a
log-depth scan, or by logarithms over an open axis (modelkit.converters._tf_cumprod; no TFLite builtin, and tf2onnx
writes a Loop that TVM refuses: nc88).

`keras.ops.einsum` of three or more operands is traced as two-operand einsums, left to right
(modelkit.converters._tf_einsum): TensorFlow's own contraction order wrote intermediates that the TFLite converter
lowered to a model that does not load, or to the wrong shape at an open length (nc95's attention pooling).
Indexing with a new axis past the front (`weights[..., None]`) is traced as the slice without it and expand_dims
(modelkit.converters._tf_newaxis): over open dimensions TFLite had no builtin for the StridedSlice.

`tf.math.sinh`, `cosh`, `tan`, `atan`, `asin`, `acos`, `asinh`, `acosh`, `atanh`, `erf`, `erfinv` (no TFLite
builtin) and `log1p`, `expm1` (tf2onnx writes ONNX ops that do not exist) are traced from Exp, Log, Sqrt, Sin, Cos,
Atan2 in forms that keep float32 accuracy (modelkit.converters._tf_elementwise).

`keras.ops.normalize` (UnitNormalization, Dot(normalize=True)) bounds the sum of squares before its reciprocal
square root instead of after (modelkit.converters._tf_normalize): XNNPACK's rsqrt of 0 is NaN, so every zero vector
came out of the .tflite file as NaN (nc124).

A product of int8 tensors (`keras.ops.matmul`, `keras.ops.einsum`: the Dense and EinsumDense layers of a model
quantized by Keras' own `model.quantize("int8")`) is traced as a float32 product of the same
values, cast to int32: Keras' BatchMatMulV3 of int8 into int32 has no TFLite lowering ("'tfl.fully_connected' op
operand #0 must be tensor of 32-bit float or QI8 ...", nc151). The sums are the same integers while they stay below
2**24 (a contraction of up to 1,040 terms of at most 127 * 127), and float32's rounding of them beyond. The
TFLite edge alone traces so, and only a model with such products (modelkit.converters.keras_tflite): ONNX
(MatMulInteger) and the SavedModel keep the int8 weights and products. Keras' float8 quantize-dequantize (a model
quantized "float8") is computed in float32 (modelkit.converters._float8), by the torch-based edges too.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator


@contextlib.contextmanager
def lowerings(int8_products_in_float: bool = False) -> Iterator[None]:
    """Patch Keras' TF causal-mask and 3-D pooling lowerings (and the rest above) for the duration of a trace; with
    `int8_products_in_float`, products of int8 tensors too (for TFLite alone, see the module's docstring)."""
    try:
        from keras.src.backend.tensorflow import nn
    except ImportError:  # pragma: no cover - another Keras layout: nothing to patch
        yield
        return
    from unittest import mock  # the standard library's attribute patching, restored on exit

    from ._ctc_greedy import greedy_ctc_decode

    patches = {"max_pool": _pool3d(nn.max_pool, "MAX"), "average_pool": _pool3d(nn.average_pool, "AVG"),
               "conv": _grouped_conv(nn.conv), "ctc_decode": greedy_ctc_decode(nn.ctc_decode, "tensorflow")}
    if hasattr(nn, "_apply_masks") and hasattr(nn, "_get_large_negative"):
        patches["_apply_masks"] = _apply_masks
    from keras.src.backend.tensorflow import numpy as tnp

    from ._tf_cumprod import stepped_cumprod
    from ._tf_einsum import pairwise_einsum
    from ._tf_fft import framed_stft, matrix_rfft
    from ._tf_newaxis import expanded_new_axes
    from ._tf_quantile import float32_quantile

    arg = {"argmax": _arg_extreme("argmax"), "argmin": _arg_extreme("argmin"), "repeat": _repeat_static(tnp.repeat),
           "_quantile": float32_quantile(tnp._quantile), "roll": roll_by_slices(tnp.roll),
           "cumprod": stepped_cumprod(tnp.cumprod), "einsum": pairwise_einsum(tnp.einsum)}
    if int8_products_in_float:
        arg.update(matmul=float_int8_products(tnp.matmul), einsum=float_int8_products(arg["einsum"], einsum=True))
    import keras
    from keras.src.backend.tensorflow import core
    from keras.src.backend.tensorflow import image as timage
    from keras.src.backend.tensorflow import math as tmath
    from keras.src.ops import image as src_image

    from ._complex_dft import dft_ops
    from ._float8 import emulated_float8
    from ._lookup import compared_lookups
    from ._search import counted_digitize, counted_searchsorted
    from ._tf_elementwise import lowered_elementwise
    from ._tf_normalize import bounded_normalize
    from ._tf_resize import matrix_resize
    from ._tf_scan import lowered_scan
    from ._tf_slice_update import selected_slice_update
    from ._tf_switch import constant_switch
    from ._time_distributed import folded_time_steps
    from ._warp import gathered_warps

    resize = {"resize": _resize_open(src_image)}
    with (mock.patch.multiple(nn, **patches), mock.patch.multiple(tnp, **arg),
          mock.patch.multiple(src_image, **resize), mock.patch.multiple(keras.ops.image, **resize),
          mock.patch.multiple(core, scan=lowered_scan(core.scan), switch=constant_switch(core.switch),
                              slice_update=selected_slice_update(core.slice_update)),
          mock.patch.multiple(tmath, rfft=matrix_rfft(tmath.rfft), stft=framed_stft(tmath.stft),
                              **dft_ops(tmath.fft, tmath.fft2, tmath.ifft2)),
          mock.patch.multiple(timage, rgb_to_hsv=_rgb_to_hsv(timage.rgb_to_hsv), resize=matrix_resize(timage.resize),
                              hsv_to_rgb=_hsv_to_rgb(timage.hsv_to_rgb)), gathered_warps("tensorflow"),
          counted_searchsorted("tensorflow"), counted_digitize("tensorflow"), expanded_new_axes(),
          lowered_elementwise(), bounded_normalize(), compared_lookups(), folded_time_steps(), emulated_float8()):
        yield


def _arg_extreme(kind: str) -> Any:
    """keras.ops.argmax / argmin as tf.math.argmax / argmin. Keras' TF backend first tells -0.0 below 0.0 by its
    sign bit (Bitcast and BitwiseAnd: no TFLite builtin, no ONNX op), so a model that answers with its class id
    converted to neither. The only difference: a tie between -0.0 and 0.0 goes to the first index, as between
    any equal values (and every hop is verified against its source)."""
    def arg(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        flat = axis is None
        y = getattr(tf.math, kind)(tf.reshape(x, [-1]) if flat else x, axis=0 if flat else axis, output_type="int32")
        if keepdims:
            y = tf.reshape(y, [1] * len(x.shape)) if flat else tf.expand_dims(y, axis)
        return y
    return arg


def roll_by_slices(keras_roll: Any) -> Any:
    """keras.ops.roll by whole numbers as two slices and a concat along each rolled axis (a gather of the indices
    (i - shift) mod n over an open axis; over the flattened tensor for axis=None): TF's Roll has no TFLite builtin
    (nc87: a token shift). A shift held in a tensor stays TF's Roll."""
    def roll(x: Any, shift: Any, axis: Any = None) -> Any:
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        shifts = list(shift) if isinstance(shift, (list, tuple)) else [shift]
        axes = [None] if axis is None else list(axis) if isinstance(axis, (list, tuple)) else [axis]
        if len(shifts) == 1:
            shifts = shifts * len(axes)
        if (not x.shape.rank or len(shifts) != len(axes) or (axis is None and len(shifts) != 1)
                or not all(isinstance(s, int) and not isinstance(s, bool) for s in shifts)):
            return keras_roll(x, shift, axis)
        if axis is None:
            flat = _rolled(tf.reshape(x, [-1]), shifts[0], 0)
            return tf.reshape(flat, x.shape if x.shape.is_fully_defined() else tf.shape(x))
        for s, a in zip(shifts, axes):
            x = _rolled(x, s, a % x.shape.rank)
        return x
    return roll


def _rolled(x: Any, shift: int, axis: int) -> Any:
    import tensorflow as tf

    n = x.shape[axis]
    if n is None:
        size = tf.shape(x)[axis]
        return tf.gather(x, tf.math.floormod(tf.range(size) - shift, size), axis=axis)
    shift %= max(n, 1)
    if not shift:
        return x
    head = (slice(None),) * axis
    return tf.concat([x[head + (slice(n - shift, None),)], x[head + (slice(0, n - shift),)]], axis=axis)


def _colour_planes(keras_own: Any, planes: Any) -> Any:
    """keras.ops.image.rgb_to_hsv / hsv_to_rgb: `planes(tf, a, b, c, images)` of the three channel planes of
    channels_last float images, stacked back; other images go to `keras_own`."""
    def convert(images: Any, data_format: Any = None) -> Any:
        import tensorflow as tf
        from keras.src import backend

        images = tf.convert_to_tensor(images)
        if (backend.standardize_data_format(data_format) != "channels_last" or not images.dtype.is_floating
                or images.shape.rank not in (3, 4) or images.shape[-1] != 3):
            return keras_own(images, data_format)
        return tf.stack(planes(tf, *tf.unstack(images, 3, axis=-1), images), axis=-1)
    return convert


def _rgb_to_hsv(keras_rgb_to_hsv: Any) -> Any:
    """keras.ops.image.rgb_to_hsv (channels_last floats) in the arithmetic of TensorFlow's RGBToHSV kernel."""
    def hsv(tf: Any, r: Any, g: Any, b: Any, images: Any) -> list[Any]:
        value = tf.reduce_max(images, axis=-1)
        spread = value - tf.reduce_min(images, axis=-1)
        zero = tf.zeros_like(value)
        saturation = tf.where(value > 0, spread / tf.where(value > 0, value, tf.ones_like(value)), zero)
        norm = 1.0 / (6.0 * tf.where(spread > 0, spread, tf.ones_like(spread)))
        hue = tf.where(tf.equal(r, value), norm * (g - b),
                       tf.where(tf.equal(g, value), norm * (b - r) + 2.0 / 6.0, norm * (r - g) + 4.0 / 6.0))
        hue = tf.where(spread > 0, hue, zero)
        return [tf.where(hue < 0, hue + 1.0, hue), saturation, value]
    return _colour_planes(keras_rgb_to_hsv, hsv)


def _hsv_to_rgb(keras_hsv_to_rgb: Any) -> Any:
    """keras.ops.image.hsv_to_rgb (channels_last floats) in the arithmetic of TensorFlow's HSVToRGB kernel (nc157:
    tf2onnx has no HSVToRGB, TFLite no builtin): each channel from the hue's distance to its sixths, clipped."""
    def rgb(tf: Any, h: Any, s: Any, v: Any, images: Any) -> list[Any]:
        dh = h * 6.0
        parts = [tf.clip_by_value(tf.abs(dh - 3.0) - 1.0, 0.0, 1.0),
                 tf.clip_by_value(2.0 - tf.abs(dh - 2.0), 0.0, 1.0),
                 tf.clip_by_value(2.0 - tf.abs(dh - 4.0), 0.0, 1.0)]
        return [((1.0 - s) + s * d) * v for d in parts]
    return _colour_planes(keras_hsv_to_rgb, rgb)


def float_int8_products(keras_fn: Any, einsum: bool = False) -> Any:
    """keras.ops.matmul (or with `einsum`, keras.ops.einsum) of dense int8 tensors alone as the same product of
    float32 tensors, cast to int32 as Keras' own (see the module's docstring)."""
    def product(*args: Any, **kwargs: Any) -> Any:
        import tensorflow as tf
        from keras.src.backend.tensorflow.core import convert_to_tensor

        head, operands = (args[:1], args[1:]) if einsum else ((), args)
        if any(isinstance(x, tf.SparseTensor) for x in operands):
            return keras_fn(*args, **kwargs)
        operands = [convert_to_tensor(x) for x in operands]  # a Keras variable (the quantized kernel) too
        # Keras multiplies 1-D int8 operands of matmul in int8; those keep Keras' own code
        if not operands or not all(x.dtype == tf.int8 and (einsum or x.shape.rank != 1) for x in operands):
            return keras_fn(*args, **kwargs)
        return tf.cast(keras_fn(*head, *[tf.cast(x, tf.float32) for x in operands], **kwargs), tf.int32)
    return product


def _repeat_static(keras_repeat: Any) -> Any:
    """keras.ops.repeat whose output keeps every dim its input knows (see the module's docstring)."""
    def repeat(x: Any, repeats: Any, axis: Any = None) -> Any:
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        rank = x.shape.rank
        if (not isinstance(repeats, int) or isinstance(repeats, bool) or axis is None or not rank
                or x.dtype == tf.uint16):  # tf.repeat takes no uint16 either: Keras casts it
            return keras_repeat(x, repeats, axis)
        axis = axis % rank
        dims = [d if d is not None else tf.shape(x)[i] for i, d in enumerate(x.shape)]
        dims[axis] = dims[axis] * repeats
        tiled = tf.tile(tf.expand_dims(x, axis + 1), [1] * (axis + 1) + [repeats] + [1] * (rank - axis - 1))
        return tf.reshape(tiled, tf.stack(dims) if any(tf.is_tensor(d) for d in dims) else dims)
    return repeat


def _resize_open(src_image: Any) -> Any:
    """keras.ops.image.resize that takes a size holding graph tensors: Keras' checks (`size[0] <= 0`) ask such a
    tensor for a Python bool; its private `_resize` (the backend's resize and the dtype handling) runs instead."""
    checked = src_image.resize

    def resize(images: Any, size: Any, *args: Any, **kwargs: Any) -> Any:
        import tensorflow as tf

        if len(size) == 2 and any(tf.is_tensor(s) for s in size) and hasattr(src_image, "_resize"):
            return src_image._resize(images, tuple(size), *args, **kwargs)
        return checked(images, size, *args, **kwargs)
    return resize


def _grouped_conv(keras_conv: Any) -> Any:
    """Keras' TF backend runs a grouped convolution inside tf.function(jit_compile=True), which tf2onnx leaves as
    an opaque StatefulPartitionedCall ("No Op registered for StatefulPartitionedCall"). Traced instead,
    channels_last, as a depthwise convolution (one input channel per group, 2-D, equal strides, no stride with a
    dilation) or as one convolution per group, concatenated."""
    def conv(inputs: Any, kernel: Any, strides: Any = 1, padding: str = "valid", data_format: Any = None,
             dilation_rate: Any = 1) -> Any:
        import tensorflow as tf
        from keras.src import backend

        channels, per_group = inputs.shape[-1], kernel.shape[-2]
        if (backend.standardize_data_format(data_format) != "channels_last" or channels is None
                or channels == per_group):
            return keras_conv(inputs, kernel, strides, padding, data_format, dilation_rate)
        rank = len(inputs.shape) - 2
        step = (strides,) * rank if isinstance(strides, int) else tuple(strides)
        rate = (dilation_rate,) * rank if isinstance(dilation_rate, int) else tuple(dilation_rate)
        if per_group == 1 and rank == 2 and step[0] == step[1] and (set(step) == {1} or set(rate) == {1}):
            k = tf.reshape(kernel, (*kernel.shape[:2], channels, kernel.shape[-1] // channels))
            return tf.nn.depthwise_conv2d(inputs, k, strides=(1, *step, 1), padding=padding.upper(), dilations=rate)
        groups = channels // per_group
        parts = zip(tf.split(inputs, groups, axis=-1), tf.split(kernel, groups, axis=-1))
        return tf.concat([keras_conv(x, k, strides, padding, data_format, dilation_rate) for x, k in parts], axis=-1)
    return conv


def _pool3d(keras_pool: Any, kind: str) -> Any:
    """3-D pooling (channels_last, 5-D) as 2-D pooling over height and width, then over depth: max and mean
    over a box are separable, and TF pads each axis alike for 'same' (and averages over the valid cells only,
    a count that factors per axis too). TFLite has MAX_POOL_2D / AVERAGE_POOL_2D builtins, no 3-D pooling."""
    def pool(inputs: Any, pool_size: Any, strides: Any = None, padding: str = "valid", data_format: Any = None) -> Any:
        import tensorflow as tf
        from keras.src import backend

        if len(inputs.shape) != 5 or backend.standardize_data_format(data_format) != "channels_last":
            return keras_pool(inputs, pool_size, strides, padding, data_format)
        size = (pool_size,) * 3 if isinstance(pool_size, int) else tuple(pool_size)
        step = size if strides is None else (strides,) * 3 if isinstance(strides, int) else tuple(strides)
        pad = padding.upper()
        op = tf.nn.max_pool2d if kind == "MAX" else tf.nn.avg_pool2d
        x = tf.convert_to_tensor(inputs)
        shape = tf.shape(x)
        b, d, c = shape[0], shape[1], x.shape[-1]
        h = op(tf.reshape(x, tf.stack([b * d, shape[2], shape[3], c])), size[1:], step[1:], pad)
        hs = tf.shape(h)
        h = tf.reshape(h, tf.stack([b, d, hs[1] * hs[2], c]))
        if size[0] != 1 or step[0] != 1:
            h = op(h, (size[0], 1), (step[0], 1), pad)
        return tf.reshape(h, tf.stack([b, tf.shape(h)[1], hs[1], hs[2], c]))
    return pool


def _apply_masks(logits: Any, mask: Any, is_causal: bool) -> Any:
    """keras.src.backend.tensorflow.nn._apply_masks with the causal mask as `row >= col` of two ranges."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import nn

    if mask is None and not is_causal:
        return logits
    combined = tf.ones_like(logits, dtype="bool")
    if mask is not None:
        combined = tf.logical_and(combined, mask)
    if is_causal:
        shape = tf.shape(logits)  # (batch, heads, T, S)
        rows = tf.reshape(tf.range(shape[2]), [1, 1, -1, 1])
        cols = tf.reshape(tf.range(shape[3]), [1, 1, 1, -1])
        combined = tf.logical_and(combined, rows >= cols)
    return tf.where(combined, logits, nn._get_large_negative(logits.dtype))
