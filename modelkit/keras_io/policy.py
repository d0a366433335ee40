"""Mixed-precision Keras models (`keras.mixed_precision.set_global_policy("mixed_float16")`) computed in float32.

A mixed policy keeps every variable in float32 and computes in float16 or bfloat16: a way to train faster on
accelerators. The CPU and mobile engines the artifacts run on have no fast half-precision path for most ops
(TFLite has no builtin float16 Conv2D; onnxruntime's CPU kernels cast around it), and each engine rounds the
half-precision intermediates in its own order: measured on a digits CNN trained under mixed_float16, ONNX
(tf2onnx and torch.onnx) landed 4e-4 to 6e-4 from Keras' own mixed computation, above the edge's 1e-4,
while both are float16 roundings of the same float32 function. So a model loaded for conversion or as the
reference computes in float32, its weights unchanged (they are float32 already): every artifact computes
that float32 function, parity is judged against it, and the manifest records the model's own policy. The
float32 function is the more exact one of the two; a user who wants half-precision weights asks for it
(`--quantize fp16`: TFLite's weights; `bf16`: OpenVINO), accuracy-gated like every lossy mode.

Models whose variables are themselves float16 or bfloat16 (policy "float16", "bfloat16") are left as they are.
"""
from __future__ import annotations

from typing import Any

MIXED = ("mixed_float16", "mixed_bfloat16")
POLICY_ATTR = "_modelkit_mixed_policy"  # set on a model computed in float32 here: the policy it was saved with


def mixed_policy(model: Any) -> str | None:
    """The first mixed policy ("mixed_float16" / "mixed_bfloat16") among the model's layers, or None."""
    for layer in (model, *model._flatten_layers(include_self=False)):
        name = getattr(getattr(layer, "dtype_policy", None), "name", None)
        if name in MIXED:
            return name
    return None


def in_float32(model: Any) -> Any:
    """`model` computing in float32 when one of its layers has a mixed policy (same weights), else `model`.

    A model Keras can rebuild from its config (functional, Sequential) is rebuilt with float32 policies, so
    its symbolic outputs carry float32 too; any other (subclassed) has each layer's policy set to float32 in
    place. The policy found is kept on the returned model (`POLICY_ATTR`)."""
    policy = mixed_policy(model)
    if policy is None:
        return model
    try:
        out = _rebuilt(model)
    except Exception:  # noqa: BLE001 - a config Keras cannot rebuild (a subclassed model): set policies in place
        for layer in (model, *model._flatten_layers(include_self=False)):
            if getattr(getattr(layer, "dtype_policy", None), "name", None) in MIXED:
                layer.dtype_policy = "float32"
        out = model
    setattr(out, POLICY_ATTR, policy)
    return out


def _rebuilt(model: Any) -> Any:
    import keras
    from keras.src.models.functional import Functional  # no public name for the class of a functional model

    if type(model) not in (keras.Sequential, Functional):
        raise TypeError("not a functional model")
    twin = model.__class__.from_config(_float32(model.get_config()))
    weights = model.get_weights()
    twin.set_weights(weights)
    for layer in twin._flatten_layers(include_self=False):  # state derived from weights (adapted Normalization)
        finalize = getattr(layer, "finalize_state", None)
        if callable(finalize):
            finalize()
    if len(twin.get_weights()) != len(weights) or mixed_policy(twin) is not None:
        raise ValueError("the float32 rebuild differs")
    return twin


def _float32(node: Any) -> Any:
    """The config with every mixed DTypePolicy made float32."""
    if isinstance(node, dict):
        if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
            if node["config"].get("name") in MIXED:
                return {**node, "config": {**node["config"], "name": "float32"}}
            return node
        return {k: (("float32" if v in MIXED else v) if k == "dtype" else _float32(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_float32(v) for v in node]
    return node


def saved_mixed_policy(config: Any) -> str | None:
    """The first mixed policy named in a saved model's config (check_keras_archive's), or None: no Keras needed."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and isinstance(config.get("config"), dict):
            name = config["config"].get("name")
            return name if name in MIXED else None
        if config.get("dtype") in MIXED:
            return config["dtype"]
        config = list(config.values())
    if isinstance(config, list):
        for item in config:
            found = saved_mixed_policy(item)
            if found:
                return found
    return None


def note(config: Any, name: str) -> str | None:
    """The progress line for a model saved with a mixed policy, else None."""
    policy = saved_mixed_policy(config)
    if policy is None:
        return None
    return (f"note: {name} was saved with dtype policy {policy} (its weights are float32): its artifacts compute "
            "in float32 and are checked against the model computed in float32, the more exact of the two (half "
            "precision on request, accuracy-gated: --quantize fp16 for TFLite's weights, bf16 for OpenVINO)")
