"""Pre-conversion support checks: refuse, before any framework runs, a .keras model that a target
format cannot represent, naming the layer, the format, the reason and the formats that take it.

The checks read the archive's config.json only (modelkit.keras_io.files.check_keras_archive) and are
table-driven: RULES maps a target format to per-class reasons (a Rule narrows one to some configs) that
hold for every route to it, ROUTE_RULES a (format, route) to the reasons of one route (tf2onnx lacks
StringToHashBucketFast), found by trying each case with the installed frameworks
(tests/convert/test_support.py, tests/convert/test_routes.py and the preprocessing matrix in
tests/convert/test_preprocessing.py). A model is refused for a format only when every route refuses it,
with each route's reason; a hop checks its own route (modelkit.converters.hop). Unregistered custom
classes fail for every format: Keras cannot rebuild them, so no edge can load the model.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from ..errors import ModelkitError, UnregisteredClassError, UnsupportedConversionError
from ..formats import Format

_TF_LOOKUP = ("runs through TensorFlow lookup/hash ops on numpy values under the torch backend, which "
              "tracing records as constants of the example batch and torch.export cannot capture")
_STRINGS = "it works on string tensors, and torch has no string tensors"
_NO_STRING_SIGNATURE = ("it takes or makes string tensors, and modelkit's signatures and runtimes carry numeric "
                        "tensors only; keep the string preprocessing outside the model (e.g. in tf.data) and "
                        "convert the model that takes its integer ids")
_MASKED_RNN = ("it consumes a mask (from Masking or Embedding(mask_zero=True)), and Keras' masked RNN loop "
               "under torch iterates over the batch (list(output)), so torch.export fixes the batch size (a masked "
               "LSTM / GRU with tanh / sigmoid gates and a bias runs as torch's scan instead)")
_RNN_CLASSES = ("LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")
# measured with executorch 1.5.1 (nc54, a volumetric segmenter): XNNPACK has no 3-D convolution or pooling, and
# the runtime's portable kernels have no 3-D pooling (load fails: operator missing, error 0x14) and a convolution
# for 1-D and 2-D inputs only (the first run fails: error 0x12)
_EXECUTORCH_3D = ("it works on volumes (3-D), and ExecuTorch has no kernel for that: XNNPACK has no 3-D convolution "
                  "or pooling, and the runtime's portable kernels fail on it (pooling: operator missing at load; "
                  "convolution: error 0x12 at the first run)")
_3D_CLASSES = ("Conv3D", "Conv3DTranspose", "MaxPooling3D", "AveragePooling3D")
@dataclass(frozen=True)
class Rule:
    """Why a layer class cannot convert to a format; `when` narrows it to some configs (None: always)."""

    reason: str
    when: Callable[[dict[str, Any]], bool] | None = None

    def applies(self, config: dict[str, Any]) -> bool:
        return self.when is None or bool(self.when(config))


def _bincount(config: dict[str, Any]) -> bool:
    return config.get("output_mode") in ("multi_hot", "count")


def _table_kept(config: dict[str, Any]) -> bool:
    """An IntegerLookup that stays a TF hash table when traced (the others become comparisons: _lookup.py)."""
    from ._lookup import lowerable

    return not lowerable(config)


def _suffixed(why: str | Rule, text: str) -> str | Rule:
    """A reason, or a Rule's, with `text` added."""
    return why + text if isinstance(why, str) else Rule(why.reason + text, why.when)


# nc158, measured with executorch 1.5.1: Keras' torch antialiased resize is aten._upsample_bicubic2d_aa (not in the
# Core ATen op set: the lowering fails) or aten._upsample_bilinear2d_aa (its portable kernel fails at the first run
# over an open batch: "Check failed (out.size(0) == in.size(0))", error 0x12)
_EXECUTORCH_AA = Rule("it resizes with antialias=True, which Keras' torch backend runs as "
                      "aten._upsample_bilinear2d_aa / _upsample_bicubic2d_aa, and ExecuTorch cannot run either "
                      "(bicubic is not in its Core ATen op set; bilinear's kernel fails over an open batch, "
                      "error 0x12)",
                      lambda config: bool(config.get("antialias")) and config.get("interpolation") != "nearest")
# nc156: a TorchModuleWrapper's torch.nn.Module runs only under Keras' torch backend (under TensorFlow, Keras'
# load fails: "Can't call numpy() on Tensor that requires grad"); the routes that trace under TensorFlow refuse it
_TORCH_MODULE = ("it wraps a torch.nn.Module, which runs only under Keras' torch backend, and {target} is made "
                 "under TensorFlow")
# nc156: a JaxLayer / FlaxLayer runs a JAX function: Keras runs it under JAX, and under TensorFlow through jax2tf as
# one XlaCallModule (StableHLO) op, which the SavedModel and the TFLite converter take and tf2onnx does not
_JAX_FUNCTION = ("it runs a JAX function, which Keras runs only under its JAX backend and, through jax2tf as one "
                 "XlaCallModule (StableHLO) op, under TensorFlow; {why}")
_JAX_TORCH = _JAX_FUNCTION.format(why="torch cannot run it")
_JAX_ONNX = _JAX_FUNCTION.format(why="tf2onnx cannot convert an XlaCallModule op and torch cannot run it")
_JAX_CLASSES = ("JaxLayer", "FlaxLayer")
_KEPT_TABLE = (" (modelkit traces an IntegerLookup as comparisons with its vocabulary, except with invert=True, "
               "num_oov_indices=0, oov_method='farmhash', sparse=True or a mask token with an encoded output)")
_TORCH_COMMON: dict[str, str | Rule] = {
    "IntegerLookup": Rule(_TF_LOOKUP + _KEPT_TABLE, _table_kept),
    "Hashing": _TF_LOOKUP,
    "HashedCrossing": _TF_LOOKUP,
    "StringLookup": _STRINGS,
    "TextVectorization": _STRINGS,
}
_STRING_LAYERS: dict[str, str | Rule] = {"StringLookup": _NO_STRING_SIGNATURE,
                                         "TextVectorization": _NO_STRING_SIGNATURE}
_TF_HASH_TABLE = ("it looks values up in a TensorFlow hash table (LookupTableFindV2), which {target}; "
                  "the SavedModel keeps the table")
_CROSS = "it crosses and hashes its inputs with TensorFlow's SparseCross (FarmHash), which {target}"
_TF2ONNX_RULES: dict[str, str | Rule] = {
    "IntegerLookup": Rule(_TF_HASH_TABLE.format(target="tf2onnx maps to no standard ONNX op") + _KEPT_TABLE,
                          _table_kept),
    "Hashing": "it hashes with TensorFlow's StringToHashBucketFast, which tf2onnx maps to no standard ONNX op",
    "HashedCrossing": _CROSS.format(target="tf2onnx maps to no standard ONNX op"),
}
_ONNX_RULES: dict[str, str | Rule] = {**_STRING_LAYERS, **_TF2ONNX_RULES}  # what TVM gets from tf2onnx's graph

# format -> {Keras class name -> why it cannot convert to that format}; each case was found by converting
# a small model with the layer (tests/convert/test_preprocessing.py holds the full matrix)
RULES: dict[Format, dict[str, str | Rule]] = {
    Format.TORCHSCRIPT: {**_TORCH_COMMON, **dict.fromkeys(_JAX_CLASSES, _JAX_TORCH)},
    Format.TORCH_EXPORT: {**_TORCH_COMMON, **dict.fromkeys(_JAX_CLASSES, _JAX_TORCH)},
    Format.EXECUTORCH: {**_TORCH_COMMON, **{c: _EXECUTORCH_3D for c in _3D_CLASSES},
                        **dict.fromkeys(_JAX_CLASSES, _JAX_TORCH), "Resizing": _EXECUTORCH_AA},
    Format.ONNX: {**_STRING_LAYERS, **dict.fromkeys(_JAX_CLASSES, _JAX_ONNX)},
    Format.TVM: {
        **{k: _suffixed(v, " (TVM compiles the ONNX model)") for k, v in _ONNX_RULES.items()},
        **dict.fromkeys(_JAX_CLASSES, _JAX_ONNX + " (TVM compiles the ONNX model)"),
        "CenterCrop": ("TVM 0.27 compiles its ONNX Slice with a dynamic batch into code that fails at run time "
                       "(std::bad_alloc); `modelkit compile --batch N` compiles it for a fixed batch (with "
                       "`--input-spec` fixing any other open dimension, such as an image's sides)"),
    },
    Format.TFLITE: {
        **_STRING_LAYERS,
        "IntegerLookup": Rule(_TF_HASH_TABLE.format(target="is no TFLite builtin op (it needs Flex ops, which "
                                                    "ai-edge-litert cannot run)") + _KEPT_TABLE, _table_kept),
        "Hashing": ("it turns ids into strings (AsString) and hashes them, and neither is a TFLite builtin op "
                    "(they need Flex ops, which ai-edge-litert cannot run)"),
        "HashedCrossing": _CROSS.format(target="is no TFLite builtin op (it needs Flex ops, which ai-edge-litert "
                                               "cannot run)"),
        "TorchModuleWrapper": _TORCH_MODULE.format(target="a .tflite"),
        "CategoryEncoding": Rule("output_mode 'multi_hot' / 'count' counts with DenseBincount, which is no TFLite "
                                 "builtin op (it needs Flex ops); output_mode='one_hot' converts", _bincount),
    },
    Format.SAVED_MODEL: {**_STRING_LAYERS, "TorchModuleWrapper": _TORCH_MODULE.format(target="the SavedModel")},
    # OpenVINO converts the ONNX model: what neither keras -> onnx route (tf2onnx, torch.onnx) can make
    Format.OPENVINO: {**_STRING_LAYERS, **{k: _suffixed(v, " (and torch.onnx cannot make it either; OpenVINO converts "
                                                          "the ONNX model)")
                                           for k, v in _TF2ONNX_RULES.items() if k in _TORCH_COMMON},
                      **dict.fromkeys(_JAX_CLASSES, _JAX_ONNX + " (OpenVINO converts the ONNX model)")},
}
# a stateful recurrent layer (stateful=True, a fixed batch) keeps its state in the model from one call to the
# next; an artifact is a function of its inputs, and the traces fail on Keras' check of the state's batch
_STATEFUL = Rule("it is stateful (stateful=True): it keeps its state inside the model from one call to the next, "
                 "and every format here is a function of its inputs; for a streaming model, build it with "
                 "stateful=False and return_state=True, take the state in as an Input passed as initial_state, "
                 "and feed each call's state output to the next call", lambda config: bool(config.get("stateful")))
for _rules in RULES.values():
    for _name in _RNN_CLASSES:
        _rules.setdefault(_name, _STATEFUL)
# (format, route) -> {Keras class name -> why that route cannot convert it}: refusals of one route
# (modelkit.converters.registry.ROUTES), which the format's other routes may not share
ROUTE_RULES: dict[tuple[Format, str], dict[str, str | Rule]] = {
    (Format.ONNX, "tf2onnx"): {**_TF2ONNX_RULES,
                               "TorchModuleWrapper": _TORCH_MODULE.format(target="tf2onnx's graph")},
    (Format.ONNX, "torch"): dict(_TORCH_COMMON),
}
# (format, route) -> the layer classes it is for: a route whose model has none of them (and no custom class,
# whose sublayers the config does not show) is not tried (modelkit.converters.routes.hop_routes)
ROUTE_SCOPE: dict[tuple[Format, str], tuple[str, ...]] = {
    (Format.TFLITE, "unrolled"): _RNN_CLASSES,
    (Format.TFLITE, "loop"): _RNN_CLASSES,
    (Format.TORCH_EXPORT, "unrolled"): _RNN_CLASSES,
}
# (format, route) that cannot take a masked recurrent layer (a mask from Masking or Embedding(mask_zero=True))
MASKED_RNN_ROUTES = {(Format.TORCH_EXPORT, "export"): _MASKED_RNN}
CANNOT = "cannot be converted to {}:"  # a layer's refusal, per format (result.py says it once for several formats)
KERAS_PACKAGES = ("keras", "keras_hub", "keras_cv", "keras_nlp")
# formats whose tensors cannot hold strings (string-typed model inputs are refused)
NO_STRING_TENSORS = (Format.TORCHSCRIPT, Format.TORCH_EXPORT, Format.EXECUTORCH)
# the formats a .keras model converts to, in the order refusals list the ones that work
KERAS_TARGETS = (Format.ONNX, Format.SAVED_MODEL, Format.TFLITE, Format.TORCHSCRIPT, Format.TORCH_EXPORT,
                 Format.EXECUTORCH, Format.TVM, Format.OPENVINO)


@dataclass(frozen=True)
class LayerInfo:
    name: str
    class_name: str
    module: str | None
    registered_name: str | None
    config: dict[str, Any]


def check_support(src: str | os.PathLike | None, target: Format | str, config: dict[str, Any] | None = None,
                  route: str | None = None) -> None:
    """Raise UnsupportedConversionError if the .keras model at `src` cannot be converted to `target` (by
    `route`, a name in modelkit.converters.registry.ROUTES; None: by any of the format's routes).

    `config` skips reading the archive (when the caller already holds config.json; src may then be None).
    """
    from ..keras_io.custom import import_from_env
    from ..keras_io.files import check_keras_archive

    import_from_env()  # classes registered by MODELKIT_IMPORTS modules count as registered

    fmt = Format.parse(target)
    cfg = config if config is not None else check_keras_archive(src)
    layers = list(iter_layers(cfg))
    for layer in layers:
        if not _is_builtin(layer) and not _is_registered(layer.registered_name or layer.class_name):
            raise UnregisteredClassError(
                f"{_where(src)}layer '{layer.name}' of class '{layer.registered_name or layer.class_name}' "
                "is not registered; register it with keras.saving.register_keras_serializable in your module and "
                "name that module with --import MODULE_OR_FILE (Python: imports=[...]; or MODELKIT_IMPORTS); Keras "
                f"cannot rebuild an unregistered class, so no format can load it{_trained_with(src)}")
    check_rules(src, fmt, cfg, route)


def _trained_with(src: str | os.PathLike | None) -> str:
    """'; it was trained with --import X' when the source's manifest says so (a hint: nothing is imported)."""
    if src is None:
        return ""
    from .. import manifest

    try:
        found = manifest.read(src)
    except ModelkitError:  # a hint only; the manifest's own checks run where it is used
        return ""
    imports = ((found.training if found else None) or {}).get("imports") or []
    flags = " ".join(f"--import {i}" for i in imports if isinstance(i, str) and i.isprintable())
    return f"; it was trained with {flags}" if flags else ""


def check_rules(src: str | os.PathLike | None, target: Format | str, config: dict[str, Any] | None = None,
                route: str | Sequence[str] | None = None) -> None:
    """The table part of check_support (no Keras needed): RULES, ROUTE_RULES, string inputs, masked RNNs.
    The model is refused only when every route checked (`route`: one name or several; None: every route
    of the format) refuses it, with each route's reason; convert() runs it for every requested format
    before any work."""
    from ..keras_io.files import check_keras_archive

    fmt = Format.parse(target)
    cfg = config if config is not None else check_keras_archive(src)
    layers = list(iter_layers(cfg))
    names = [route] if isinstance(route, str) else [n for n in (route or route_names(fmt))
                                                     if n is None or route_applies(cfg, fmt, n)]
    found = [(name, route_refusal(layers, fmt, name)) for name in names]
    refused = [(name, r) for name, r in found if r is not None]
    if len(refused) == len(found):
        raise _unsupported(src, refused, fmt)


def route_names(fmt: Format) -> tuple[str | None, ...]:
    """The routes from .keras to `fmt` in the order they are tried; (None,) for formats reached through
    another (tvm: through onnx), whose rules are the format's own."""
    from .registry import ROUTES

    return tuple(r.name for r in ROUTES.get((Format.KERAS, fmt), ())) or (None,)


def route_refusal(layers: list[LayerInfo], fmt: Format, route: str | None) -> tuple[LayerInfo, str] | None:
    """(layer, reason) of the first layer `route` of `fmt` cannot convert, or None."""
    for layer in layers:  # the layer that cannot convert is named, before the input that feeds it
        reason = refusal(layer, fmt, route)
        if reason is not None:
            return layer, reason
    for layer in layers:
        if layer.class_name == "InputLayer" and _dtype(layer.config) == "string":
            return layer, _STRINGS if fmt in NO_STRING_TENSORS else _NO_STRING_SIGNATURE
    masked = MASKED_RNN_ROUTES.get((fmt, route or ""))
    if masked and any(_makes_mask(layer) for layer in layers):
        for layer in layers:
            if layer.class_name in _RNN_CLASSES and _is_builtin(layer) and not _scanned(layer.config, layer.class_name):
                return layer, masked
    return None


def _scanned(config: dict[str, Any], class_name: str) -> bool:
    """Whether the pt2 edge runs this recurrent layer (or the one a Bidirectional wraps) as torch's scan,
    masked or not (modelkit.converters._torch_rnn.scanned_recurrent): an LSTM / GRU with tanh / sigmoid,
    a bias, no unroll, and a GRU with reset_after."""
    if class_name == "Bidirectional":
        inner = config.get("layer") or {}
        return _scanned(inner.get("config") or {}, str(inner.get("class_name")))
    return (class_name in ("LSTM", "GRU") and config.get("activation") == "tanh"
            and config.get("recurrent_activation") == "sigmoid" and config.get("use_bias", True)
            and not config.get("unroll") and (class_name == "LSTM" or config.get("reset_after", True)))


def route_applies(config: dict[str, Any], fmt: Format, route: str) -> bool:
    """Whether `route` of `fmt` is for this model (ROUTE_SCOPE): it has a layer of a class the route is
    for, or a custom class that may hold one."""
    scope = ROUTE_SCOPE.get((fmt, route))
    if scope is None:
        return True
    return any(layer.class_name in scope or not _is_builtin(layer) for layer in iter_layers(config))


def refusal(layer: LayerInfo, fmt: Format, route: str | None = None) -> str | None:
    """Why `layer` cannot convert to `fmt` (RULES), or by `route` (ROUTE_RULES too), or None."""
    if not _is_builtin(layer):
        return None
    for rules in (RULES.get(fmt, {}), ROUTE_RULES.get((fmt, route or ""), {})):
        rule = rules.get(layer.class_name)
        if rule is not None and (isinstance(rule, str) or rule.applies(layer.config)):
            return rule if isinstance(rule, str) else rule.reason
    return None


def takes(layer: LayerInfo, fmt: Format) -> bool:
    """Whether some route of `fmt` takes `layer` (by the tables)."""
    return any(refusal(layer, fmt, name) is None for name in route_names(fmt))


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


def _unsupported(src: str | os.PathLike | None, refused: list[tuple[str | None, tuple[LayerInfo, str]]],
                 fmt: Format) -> UnsupportedConversionError:
    """One message for every route's refusal: the first route's layer and reason, then each other route's
    (when they differ), and the formats some route of which takes the first layer."""
    first_route, (layer, reason) = refused[0]
    text = f"{_where(src)}layer '{layer.name}' ({layer.class_name}) {CANNOT.format(fmt.value)} {reason}"
    others = [(name, r) for name, r in refused[1:] if r != (layer, reason)]
    if others:
        text += f" (route '{first_route}')"
        for name, (other, why) in others:
            where = "" if other == layer else f"layer '{other.name}' ({other.class_name}) "
            text += f"; route '{name}': {where}{why}"
    checked = {name for name, _ in refused}
    others = [n for n in route_names(fmt) if n is not None and n not in checked and refusal(layer, fmt, n) is None]
    if others and layer.class_name != "InputLayer":  # a route of this format that was not asked
        text += f"; routes of {fmt.value} that take it: {', '.join(others)}"
    working = [] if layer.class_name == "InputLayer" else [  # a string input: no format takes it
        f.value for f in KERAS_TARGETS if f != fmt and takes(layer, f)]
    return UnsupportedConversionError(f"{text}; formats that take it: {', '.join(working) or 'none'}")
