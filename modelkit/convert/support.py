"""Pre-conversion support checks: refuse, before any framework runs, a .keras model that a target
format cannot represent, naming the layer, the format, the reason and the formats that take it.

The checks read the archive's config.json only (modelkit.core.keras_io.check_keras_archive) and are
table-driven: RULES maps a target format to per-class reasons (a Rule narrows one to some configs),
found by trying each case with the installed frameworks (tests/convert/test_support.py and the
preprocessing matrix in tests/convert/test_preprocessing.py). Unregistered custom classes fail for every
format: Keras cannot rebuild them, so no edge can load the model.
Usage in an edge: `check_support(src, Format.X)` as its first line.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..errors import UnsupportedConversionError
from ..formats import Format

_TF_LOOKUP = ("runs through TensorFlow lookup/hash ops on numpy values under the torch backend, which "
              "tracing records as constants of the example batch and torch.export cannot capture")
_STRINGS = "it works on string tensors, and torch has no string tensors"
_NO_STRING_SIGNATURE = ("it takes or makes string tensors, and modelkit's signatures and runtimes carry numeric "
                        "tensors only; keep the string preprocessing outside the model (e.g. in tf.data) and "
                        "convert the model that takes its integer ids")
_MASKED_RNN = ("it consumes a mask (from Masking or Embedding(mask_zero=True)), and Keras' masked RNN loop "
               "under torch specializes the batch size, so torch.export cannot keep the batch dynamic; "
               "convert to torchscript instead, or drop the mask")
_RNN_CLASSES = ("LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")


@dataclass(frozen=True)
class Rule:
    """Why a layer class cannot convert to a format; `when` narrows it to some configs (None: always)."""

    reason: str
    when: Callable[[dict[str, Any]], bool] | None = None

    def applies(self, config: dict[str, Any]) -> bool:
        return self.when is None or bool(self.when(config))


def _bincount(config: dict[str, Any]) -> bool:
    return config.get("output_mode") in ("multi_hot", "count")


_TORCH_COMMON: dict[str, str | Rule] = {
    "IntegerLookup": _TF_LOOKUP,
    "Hashing": _TF_LOOKUP,
    "StringLookup": _STRINGS,
    "TextVectorization": _STRINGS,
}
_STRING_LAYERS: dict[str, str | Rule] = {"StringLookup": _NO_STRING_SIGNATURE,
                                         "TextVectorization": _NO_STRING_SIGNATURE}
_TF_HASH_TABLE = ("it looks values up in a TensorFlow hash table (LookupTableFindV2), which {target}; "
                  "the SavedModel keeps the table")
_ONNX_RULES: dict[str, str | Rule] = {
    **_STRING_LAYERS,
    "IntegerLookup": _TF_HASH_TABLE.format(target="tf2onnx maps to no standard ONNX op"),
    "Hashing": "it hashes with TensorFlow's StringToHashBucketFast, which tf2onnx maps to no standard ONNX op",
    "Discretization": "it buckets with TensorFlow's Bucketize, which tf2onnx maps to no standard ONNX op",
}

# format -> {Keras class name -> why it cannot convert to that format}; each case was found by converting
# a small model with the layer (tests/convert/test_preprocessing.py holds the full matrix)
RULES: dict[Format, dict[str, str | Rule]] = {
    Format.TORCHSCRIPT: dict(_TORCH_COMMON),
    Format.TORCH_EXPORT: dict(_TORCH_COMMON),
    Format.ONNX: _ONNX_RULES,
    Format.TVM: {
        **{k: (f"{v} (TVM compiles the ONNX model)" if isinstance(v, str) else v) for k, v in _ONNX_RULES.items()},
        "CategoryEncoding": ("TVM 0.27's ONNX importer rejects the graph tf2onnx makes of it (relax.one_hot / "
                             "relax.concat argument types); the ONNX model itself converts"),
        "CenterCrop": ("TVM 0.27 compiles its ONNX Slice with a dynamic batch into code that fails at run time "
                       "(std::bad_alloc); `modelkit compile --batch N` compiles it for a fixed batch"),
    },
    Format.TFLITE: {
        **_STRING_LAYERS,
        "IntegerLookup": _TF_HASH_TABLE.format(target="is no TFLite builtin op (it needs Flex ops, which "
                                               "ai-edge-litert cannot run)"),
        "Hashing": ("it turns ids into strings (AsString) and hashes them, and neither is a TFLite builtin op "
                    "(they need Flex ops, which ai-edge-litert cannot run)"),
        "CategoryEncoding": Rule("output_mode 'multi_hot' / 'count' counts with DenseBincount, which is no TFLite "
                                 "builtin op (it needs Flex ops); output_mode='one_hot' converts", _bincount),
    },
    Format.SAVED_MODEL: dict(_STRING_LAYERS),
}
KERAS_PACKAGES = ("keras", "keras_hub", "keras_cv", "keras_nlp")
# formats whose tensors cannot hold strings (string-typed model inputs are refused)
NO_STRING_TENSORS = (Format.TORCHSCRIPT, Format.TORCH_EXPORT)
# the formats a .keras model converts to, in the order refusals list the ones that work
KERAS_TARGETS = (Format.ONNX, Format.SAVED_MODEL, Format.TFLITE, Format.TORCHSCRIPT, Format.TORCH_EXPORT, Format.TVM)


@dataclass(frozen=True)
class LayerInfo:
    name: str
    class_name: str
    module: str | None
    registered_name: str | None
    config: dict[str, Any]


def check_support(src: str | os.PathLike | None, target: Format | str, config: dict[str, Any] | None = None
                  ) -> None:
    """Raise UnsupportedConversionError if the .keras model at `src` cannot be converted to `target`.

    `config` skips reading the archive (when the caller already holds config.json; src may then be None).
    """
    from ..core.custom import import_from_env
    from ..core.keras_io import check_keras_archive

    import_from_env()  # classes registered by MODELKIT_IMPORTS modules count as registered

    fmt = Format.parse(target)
    cfg = config if config is not None else check_keras_archive(src)
    layers = list(iter_layers(cfg))
    for layer in layers:
        if not _is_builtin(layer) and not _is_registered(layer.registered_name or layer.class_name):
            raise UnsupportedConversionError(
                f"{_where(src)}layer '{layer.name}' of class '{layer.registered_name or layer.class_name}' "
                "is not registered; register it with keras.saving.register_keras_serializable in a module the "
                "converting process imports (Keras cannot rebuild an unregistered class, so no format can load it)")
    check_rules(src, fmt, cfg)


def check_rules(src: str | os.PathLike | None, target: Format | str, config: dict[str, Any] | None = None) -> None:
    """The table part of check_support (no Keras needed): RULES, string inputs, masked RNNs to pt2.
    convert() runs it for every requested format before any work, so `--to tvm` is refused as tvm."""
    from ..core.keras_io import check_keras_archive

    fmt = Format.parse(target)
    layers = list(iter_layers(config if config is not None else check_keras_archive(src)))
    for layer in layers:  # the layer that cannot convert is named, before the input that feeds it
        reason = refusal(layer, fmt)
        if reason is not None:
            raise _unsupported(src, layer, fmt, reason)
    for layer in layers:
        if layer.class_name == "InputLayer" and _dtype(layer.config) == "string":
            raise _unsupported(src, layer, fmt, _STRINGS if fmt in NO_STRING_TENSORS else _NO_STRING_SIGNATURE)
    if fmt == Format.TORCH_EXPORT and any(_makes_mask(layer) for layer in layers):
        for layer in layers:
            if layer.class_name in _RNN_CLASSES and _is_builtin(layer):
                raise _unsupported(src, layer, fmt, _MASKED_RNN)


def refusal(layer: LayerInfo, fmt: Format) -> str | None:
    """Why `layer` cannot convert to `fmt` (RULES), or None."""
    rule = RULES.get(fmt, {}).get(layer.class_name)
    if rule is None or not _is_builtin(layer):
        return None
    if isinstance(rule, str):
        return rule
    return rule.reason if rule.applies(layer.config) else None


def iter_layers(config: dict[str, Any]) -> Iterator[LayerInfo]:
    """Every serialized layer (and the model itself) in a Keras config, nested models and wrappers included."""
    stack: list[Any] = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(reversed(node))
            continue
        if not isinstance(node, dict):
            continue
        inner = node.get("config")
        if "class_name" in node and isinstance(inner, dict) and _looks_like_layer(node, inner):
            yield LayerInfo(str(inner.get("name", node.get("name", "?"))), str(node["class_name"]),
                            node.get("module"), node.get("registered_name"), inner)
        stack.extend(v for k, v in node.items() if k != "inbound_nodes" and isinstance(v, (dict, list)))


def _looks_like_layer(node: dict[str, Any], inner: dict[str, Any]) -> bool:
    # layers carry a name and trainable flag (or build_config); dtype policies, initializers,
    # regularizers and constraints carry neither
    return "name" in inner and ("trainable" in inner or "build_config" in node or "batch_shape" in inner)


def _is_builtin(layer: LayerInfo) -> bool:
    """Keras rebuilds classes of these packages by import; any other class must be registered."""
    if layer.module is None:
        return layer.registered_name is None  # custom classes always record a registered name
    return layer.module.split(".", 1)[0] in KERAS_PACKAGES


def _is_registered(registered_name: str) -> bool:
    """Whether Keras in this process knows the class; without Keras imported nothing is registered."""
    keras = sys.modules.get("keras")
    if keras is None:
        return False
    return keras.saving.get_registered_object(registered_name) is not None


def _makes_mask(layer: LayerInfo) -> bool:
    if not _is_builtin(layer):
        return False
    return layer.class_name == "Masking" or (layer.class_name == "Embedding" and bool(layer.config.get("mask_zero")))


def _dtype(config: dict[str, Any]) -> str | None:
    d = config.get("dtype")
    if isinstance(d, dict):
        d = (d.get("config") or {}).get("name")
    return d if isinstance(d, str) else None


def _where(src: str | os.PathLike | None) -> str:
    return f"{os.fspath(src)}: " if src is not None else ""


def _unsupported(src: str | os.PathLike | None, layer: LayerInfo, fmt: Format,
                 reason: str) -> UnsupportedConversionError:
    working = [] if layer.class_name == "InputLayer" else [  # a string input: no format takes it
        f.value for f in KERAS_TARGETS if f != fmt and refusal(layer, f) is None]
    return UnsupportedConversionError(
        f"{_where(src)}layer '{layer.name}' ({layer.class_name}) cannot be converted to {fmt.value}: {reason}; "
        f"formats that take it: {', '.join(working) or 'none'}")
