"""Float32's own error on a reference's outputs, which no absolute tolerance can undercut.

A float32 network carries rounding error that grows with depth and with the size of its activations, and
every engine sums in its own order. Measured on ResNet50 (32x32, 10 classes, BatchNorm statistics from
real-ish batches; softmax outputs): eager Keras under TensorFlow is 6.2e-5 away from the float64
evaluation of the very same model at batch 7 (8e-8 at batch 1, another kernel path), while the
SavedModel, ONNX, TFLite and TVM artifacts are 1.5e-5, 3.3e-5, 6.3e-5 and 4.6e-5 away from it: each as
exact as the reference, yet up to 6e-5 away from the reference, above the SavedModel edge's 1e-5.
And outputs in the hundred thousands (a price) are float32 numbers 0.016 apart: an MLP whose last Dense
sums 256 terms onto a bias of 250000 comes out of XNNPACK 7 to 11 ulps from the float64 value (it starts
the sum at the bias: sqrt(256)/2 ulps), of TensorFlow 0.6 ulps, so TFLite is 0.1 away where atol is 1e-4.

So when an output exceeds its edge's atol, compare_models lifts each case's atol to the larger of
 - FLOOR_FACTOR x the reference's own error on that case, |float32 reference - float64 reference|, when the
   reference is a Keras model (two float32 evaluations each within the floor of the truth differ by at
   most twice it; twice more is the room for a kernel less exact than the reference's), and
 - OUTPUT_ULPS float32 ulps of the case's largest |output| (a sum of K terms at the output's scale strays
   sqrt(K)/2 ulps: 32 covers K = 4096),
never above MAX_RELATIVE of that largest |output|. The floor and the atol applied are recorded in the
parity report. A wrong artifact (a layout, op or weight mistake) is off by 1e-2 and more relative to the
outputs, far above all three.

Where the twin is measured, a case beyond that atol is then judged against the float64 evaluation itself: an
artifact within the same bound of the exact answer (capped at MAX_RELATIVE_FLOAT64 instead) is as faithful as
its float32 reference, which merely strays the other way. Measured on keras.applications with random weights
(uniform 0-255 noise, batch 7): EfficientNetB0's TFLite artifact is 1.0007e-4 from eager Keras, above the
edge's 1e-4, but 8.7e-5 from the float64 answer (Keras: 1.3e-5); EfficientNetV2B0 saved under JAX, to TFLite,
is 3.1e-3 from Keras, above the 1e-3 cap, but 1.65e-3 from the float64 answer, where Keras itself is 1.48e-3.
A wrong artifact is as far from the float64 answer as from the reference, so it still fails.
"""
from __future__ import annotations

import weakref
from typing import Any, Mapping

import numpy as np

FLOOR_FACTOR = 4.0
OUTPUT_ULPS = 32
# the floor never lifts a case's atol above this fraction of the largest |output| of that case: a model whose
# own float32 error is larger than that is numerically ill-conditioned, and its artifacts fail as before
MAX_RELATIVE = 1e-3
# against the float64 evaluation (a direct measure of the artifact's error), the floor lifts up to this instead
MAX_RELATIVE_FLOAT64 = 5e-3


def case_atols(atol: float, floor: list[float], refs: list[np.ndarray], cap: float = MAX_RELATIVE) -> list[float]:
    """Per case: max(atol, FLOOR_FACTOR x floor, OUTPUT_ULPS ulps of the largest |output|), capped at
    `cap` x that largest |output| (never below atol); a floor that is nan was not measured."""
    out = []
    for f, ref in zip(floor, refs):
        scale = float(np.max(np.abs(ref.astype(np.float64)), initial=0.0))
        ulps = OUTPUT_ULPS * float(np.spacing(np.float32(scale)))
        lifted = max(FLOOR_FACTOR * f if np.isfinite(f) else 0.0, ulps)
        out.append(max(atol, min(lifted, cap * scale)))
    return out


class Float64Twin:
    """Runs the reference's Keras model in float64 (float inputs cast up); None-safe: see `for_reference`."""

    def __init__(self, model: Any, signature: Any):
        self.model = model
        self.signature = signature

    @classmethod
    def for_reference(cls, reference: Any) -> "Float64Twin | None":
        """The float64 twin of a Keras reference (built once and kept on it), or None when the reference is no
        Keras model or cannot be rebuilt in float64 (then the edge's atol stands alone)."""
        cached = _cached(reference)
        if cached is not None:
            return cached or None
        twin = None
        model = _keras_model(reference)
        if model is not None:
            try:
                twin = cls(_rebuild_float64(model), reference.signature)
            except Exception:  # noqa: BLE001 - any layer that cannot run in float64: no floor, atol stands
                twin = None
        _remember(reference, twin)
        return twin

    def predict(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..keras_io.files import call_model

        wide = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in feed.items()}
        return call_model(self.model, wide, self.signature)


def floors(twin: Float64Twin, feeds: list[Mapping[str, np.ndarray]], refs: Mapping[str, list[np.ndarray]],
           cands: Mapping[str, list[np.ndarray]]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per output, per case: max |float32 reference - float64 reference| (the floor), and max |candidate -
    float64 reference| (inf where the twin fails)."""
    floor: dict[str, list[float]] = {name: [] for name in refs}
    truth: dict[str, list[float]] = {name: [] for name in refs}
    for i, feed in enumerate(feeds):
        try:
            wide = twin.predict(feed)
        except Exception:  # noqa: BLE001 - the twin failed on this case: no floor for it
            wide = {}
        for name in refs:
            floor[name].append(_distance(refs[name][i], wide.get(name)))
            truth[name].append(_distance(cands[name][i], wide.get(name)))
    return floor, truth


def _distance(a: np.ndarray, wide: Any) -> float:
    """max |a - wide| in float64; inf when the twin gave nothing of a's shape (or a non-finite difference)."""
    a64 = np.asarray(a, np.float64)
    if wide is None or np.shape(wide) != a64.shape:
        return float("inf")
    d = float(np.max(np.abs(a64 - np.asarray(wide, np.float64)), initial=0.0))
    return d if np.isfinite(d) else float("inf")


def _rebuild_float64(model: Any) -> Any:
    import keras

    from ..keras_io.policy import rebuilt

    twin = rebuilt(model, {"float32": "float64"}, cast=lambda w: w.astype(np.float64) if w.dtype.kind == "f" else w)
    if keras.backend.standardize_dtype(twin.outputs[0].dtype) != "float64":
        raise ValueError("the twin does not compute in float64")
    return twin


def _keras_model(reference: Any) -> Any:
    from .samples import _keras_model as find

    return find(reference)


_TWINS: "weakref.WeakKeyDictionary[Any, Float64Twin | bool]" = weakref.WeakKeyDictionary()  # keras model -> twin


def _cached(reference: Any) -> Any:
    model = _keras_model(reference)
    try:
        return _TWINS.get(model) if model is not None else False
    except TypeError:  # not weak-referenceable or hashable: no cache
        return None


def _remember(reference: Any, twin: Float64Twin | None) -> None:
    model = _keras_model(reference)
    try:
        if model is not None:
            _TWINS[model] = twin if twin is not None else False
    except TypeError:
        pass
