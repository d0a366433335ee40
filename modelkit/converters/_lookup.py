"""Keras' IntegerLookup as comparisons with its vocabulary while a model is traced (nc129).

IntegerLookup looks ids up in a TensorFlow hash table (LookupTableFindV2), which tf2onnx maps to no ONNX op and
TFLite has no builtin for, and under the torch backend it runs those TF ops on numpy values, which torch.export and
torch.jit cannot capture: a structured-data model with a categorical feature converted to SavedModel only. A
lookup in a fixed vocabulary is a pure function, written here in keras.ops for whichever backend traces: each id is
compared with every key of the table (read once, eagerly, from the table itself), the index of the key it equals
taken, an id no key equals given the OOV index (`num_oov_indices=1`) or its bucket (`x mod n` plus the OOV start,
Keras' "floormod"), a mask token its index 0; the encoding after it is Keras' own `encode_categorical_inputs` (as
CategoryEncoding runs it), except multi_hot / count / tf_idf over ids of rank 2 or more: a sum or max of one-hot
rows, where Keras' TF backend counts with DenseBincount, which TFLite lacks. Same numbers; every hop is verified
against the Keras model, whose table the reference still uses, on ids in and out of the vocabulary
(modelkit.keras_io.ranges). It costs one comparison per id and vocabulary entry, which a categorical feature's
vocabulary (tens to thousands of ids) keeps small. The SavedModel then saves no table either
(modelkit.converters._tf_function.write_saved_model), so TFLite converts it.

Left as Keras has them (and refused by modelkit.converters.support where a format cannot take them): `invert=True`
(ids back to tokens), `num_oov_indices=0` (an assertion on unknown ids), `oov_method="farmhash"` (a string hash),
a mask token with an encoded output, and `sparse=True`.
"""
from __future__ import annotations

import contextlib
from typing import Any


def lowerable(config: dict[str, Any]) -> bool:
    """Whether an IntegerLookup of this config is traced as comparisons (see the module docstring)."""
    oov = config.get("num_oov_indices", 1)
    return (not config.get("invert") and not config.get("sparse") and oov >= 1
            and (oov == 1 or config.get("oov_method", "floormod") == "floormod")
            and (config.get("mask_token") is None or config.get("output_mode", "int") == "int"))


def compared_lookups() -> contextlib.AbstractContextManager[None]:
    """IntegerLookup.call written in keras.ops inside the block, for the layers `lowerable` takes."""
    from ._keras_patch import layer_call_patch

    def make(own: Any) -> Any:
        def call(self: Any, inputs: Any) -> Any:
            # not get_config(), which reads the table's size: inside a TF trace, an op that keeps the table captured
            config = {k: getattr(self, k, None) for k in ("invert", "sparse", "num_oov_indices", "oov_method",
                                                          "mask_token", "output_mode")}
            return _compared(self, inputs) if lowerable(config) else own(self, inputs)
        return call

    return layer_call_patch("preprocessing.integer_lookup", "IntegerLookup", make)


def _compared(layer: Any, inputs: Any) -> Any:
    """The layer's output for `inputs`, from comparisons with its table's keys."""
    import numpy as np
    from keras import ops
    from keras.src import backend
    from keras.src.utils import numerical_utils

    layer._ensure_known_vocab_size()  # noqa: SLF001 - Keras' own check of an encoded output's depth
    keys, values = _table(layer)
    x = ops.cast(inputs, "int64")
    scalar = len(x.shape) == 0
    if scalar:
        x = ops.expand_dims(x, -1)
    start = 1 if layer.mask_token is not None and layer.output_mode == "int" else 0  # Keras' _oov_start_index
    n = layer.num_oov_indices
    # x mod n, the same whether an engine's integer mod floors (Keras') or truncates (tf2onnx's, ExecuTorch's)
    oov = ops.convert_to_tensor(np.int64(start)) if n == 1 \
        else ops.add(ops.mod(ops.add(ops.mod(x, n), n), n), np.int64(start))
    if keys.size:
        hits = ops.equal(ops.expand_dims(x, -1), keys)
        found = ops.sum(ops.where(hits, values, np.int64(0)), axis=-1)
        ids = ops.where(ops.any(hits, axis=-1), found, oov)
    else:
        ids = ops.add(ops.zeros_like(x), oov)
    if layer.mask_token is not None:
        ids = ops.where(ops.equal(x, np.int64(layer.mask_token)), np.int64(0), ids)
    if layer.output_mode == "int":
        return ops.squeeze(ids, -1) if scalar else ids
    depth = layer.max_tokens if layer.pad_to_max_tokens else layer._frozen_vocab_size  # noqa: SLF001
    mode = "count" if layer.output_mode == "tf_idf" else layer.output_mode
    dtype = layer._value_dtype  # noqa: SLF001
    if mode in ("multi_hot", "count") and len(ids.shape) >= 2:  # not TF's bincount: no TFLite builtin
        hot = ops.one_hot(ids, depth, dtype="float32")  # tf2onnx writes an invalid OneHot of ints
        out = ops.cast(ops.max(hot, axis=-2) if mode == "multi_hot" else ops.sum(hot, axis=-2), dtype)
    else:
        out = numerical_utils.encode_categorical_inputs(ids, output_mode=mode, depth=depth, dtype=dtype,
                                                         sparse=False, backend_module=backend)
    if layer.output_mode == "tf_idf":
        idf = np.asarray(layer.idf_weights_const)
        out = ops.multiply(ops.cast(out, idf.dtype), idf)
    return out


def _table(layer: Any) -> tuple[Any, Any]:
    """(keys, values) of the layer's hash table as int64 numpy arrays, read eagerly (also inside a TF trace)."""
    import numpy as np
    import tensorflow as tf

    with tf.init_scope():
        keys, values = layer.lookup_table.export()
        return np.asarray(keys.numpy(), np.int64), np.asarray(values.numpy(), np.int64)
