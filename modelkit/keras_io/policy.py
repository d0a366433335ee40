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

from typing import Any, Callable, Mapping

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
    twin = rebuilt(model, {m: "float32" for m in MIXED})
    if mixed_policy(twin) is not None:
        raise ValueError("the float32 rebuild kept a mixed policy")
    return twin


def rebuilt(model: Any, dtypes: Mapping[str, str], cast: Callable[[Any], Any] | None = None) -> Any:
    """`model` built again from its config with the dtypes and dtype policies named in `dtypes` renamed (mixed ->
    float32 here; float32 -> float64 for the verifier's twin, modelkit.converters._float64), its weights set
    (through `cast` when given) and the state layers derive from them recomputed."""
    twin = model.__class__.from_config(retyped_config(model.get_config(), dtypes))
    weights = model.get_weights()
    twin.set_weights([cast(w) for w in weights] if cast else weights)
    finalize_states(twin)
    probe = twin.get_weights()
    if len(probe) != len(weights) or any(a.shape != b.shape for a, b in zip(probe, weights)):
        raise ValueError("the rebuilt model has other weights")
    return twin


def finalize_states(model: Any) -> None:
    """Recompute the state that layers derive from their weights, as Keras' loader does after setting them:
    set_weights alone leaves an adapted Normalization at mean 0, variance 1 (its build-time state), so a rebuilt
    model would compute another function."""
    for layer in model._flatten_layers(include_self=False):
        finalize = getattr(layer, "finalize_state", None)
        if callable(finalize):
            finalize()


def retyped_config(node: Any, dtypes: Mapping[str, str]) -> Any:
    """A model config with every dtype and DTypePolicy named in `dtypes` renamed."""
    if isinstance(node, dict):
        if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
            name = node["config"].get("name")
            return {**node, "config": {**node["config"], "name": dtypes.get(name, name)}}
        return {k: (dtypes.get(v, v) if k == "dtype" and isinstance(v, str) else retyped_config(v, dtypes))
                for k, v in node.items()}
    if isinstance(node, list):
        return [retyped_config(v, dtypes) for v in node]
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
