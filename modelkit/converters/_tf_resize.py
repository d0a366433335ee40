"""`keras.ops.image.resize` that TensorFlow runs as ScaleAndTranslate or ResizeArea, as two matrix products.

An antialiased resize (`Resizing(..., antialias=True)`, any method but nearest) and the lanczos3 / lanczos5 / area
methods run as ScaleAndTranslate or ResizeArea, which tf2onnx maps to no ONNX op ("No Op registered for
ScaleAndTranslate") and TFLite has no builtin for (nc158: a small vision transformer behind an antialiased bicubic
Resizing reached ONNX only by torch.onnx, whose antialiased Resize OpenVINO and TVM computed differently, off by 1.0
on the logits). These resizes are linear and separable: every output row is a fixed mix of input rows, and every
output column of input columns. For an image of known height and width the two mixing matrices are computed by
TensorFlow's own resize on one-hot rows and columns (eagerly, while the model is traced), and the resize is traced as
`rows @ image @ columns.T`. An open height or width, or other dtypes, go to Keras' own resize.
"""
from __future__ import annotations

from typing import Any

SCALE_AND_TRANSLATE = ("lanczos3", "lanczos5", "area")  # ops without an ONNX / TFLite form even without antialias


def matrix_resize(keras_resize: Any) -> Any:
    """`keras_resize` (keras.src.backend.tensorflow.image.resize) as two matrix products where it would run
    ScaleAndTranslate / ResizeArea on an image of known size."""
    def resize(images: Any, size: Any, interpolation: str = "bilinear", antialias: bool = False,
               crop_to_aspect_ratio: bool = False, pad_to_aspect_ratio: bool = False, fill_mode: str = "constant",
               fill_value: float = 0.0, data_format: Any = None) -> Any:
        import tensorflow as tf
        from keras.src import backend

        images = tf.convert_to_tensor(images)
        data_format = backend.standardize_data_format(data_format)
        axes = (-2, -1) if data_format == "channels_first" else (-3, -2)
        rank = images.shape.rank
        sizes = tuple(size) if isinstance(size, (tuple, list)) else ()
        known = rank in (3, 4) and all(images.shape[a] is not None for a in axes)
        if (not (antialias and interpolation != "nearest") and interpolation not in SCALE_AND_TRANSLATE) \
                or crop_to_aspect_ratio or pad_to_aspect_ratio or not known or len(sizes) != 2 \
                or not all(isinstance(s, int) for s in sizes) or images.dtype != tf.float32:
            return keras_resize(images, size, interpolation=interpolation, antialias=antialias,
                                crop_to_aspect_ratio=crop_to_aspect_ratio, pad_to_aspect_ratio=pad_to_aspect_ratio,
                                fill_mode=fill_mode, fill_value=fill_value, data_format=data_format)
        for axis, n_out in zip(axes, sizes):
            images = _mixed_along(images, _mixing(images.shape[axis], n_out, interpolation, antialias), rank + axis)
        return images
    return resize


def _mixed_along(images: Any, mixing: Any, axis: int) -> Any:
    """`images` with `axis` mixed by the (n_out, n_in) matrix: moved last, multiplied (a batch matmul that
    broadcasts the constant: TFLite's BATCH_MATMUL, ONNX MatMul), moved back. An einsum traced to reshapes that
    TFLite's converter gave an invalid shape ([-1, 32, 3, 24]) and OpenVINO could not fuse over an open batch."""
    import tensorflow as tf

    rank = images.shape.rank
    perm = [d for d in range(rank) if d != axis] + [axis]
    back = [perm.index(d) for d in range(rank)]
    return tf.transpose(tf.matmul(tf.transpose(images, perm), mixing, transpose_b=True), back)


def _mixing(n_in: int, n_out: int, interpolation: str, antialias: bool) -> Any:
    """The (n_out, n_in) matrix TensorFlow's resize mixes one axis by: its resize of n_in one-hot rows (each a 1-wide
    image, whose other axis the resize leaves as it is), computed eagerly and kept as a constant."""
    import tensorflow as tf

    with tf.init_scope():
        basis = tf.reshape(tf.eye(n_in, dtype=tf.float32), (n_in, n_in, 1, 1))
        mixed = tf.image.resize(basis, (n_out, 1), method=interpolation, antialias=antialias)
        return tf.constant(tf.transpose(mixed[:, :, 0, 0]).numpy())
