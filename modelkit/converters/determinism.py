"""A Keras model that answers differently on the same inputs cannot be checked against, so it is refused first.

A VAE's encoder samples its latent (`keras.random.normal` in a `Sampling` layer, nc51), a model may run a
Dropout with training=True: every call draws new random numbers. Converted, each engine draws its own (or has
no such op: tf2onnx "No Op registered for StatelessRandomNormalV2", torch.export failing on the batch the
draw's shape takes), so the seven formats failed with seven unrelated reasons, and one (SavedModel) passed
parity only because its copy of the seed state started where the reference's did. The source is run twice on
the same inputs before converting; outputs that differ refuse the hop with one line naming them, the outputs
that do not, and how to keep those.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import RandomModelError

# two runs of a deterministic float32 model on the same inputs agree bit for bit on CPU; random draws differ by
# their spread. The bound only keeps a reduction order some engine might vary from counting as a draw.
RTOL, ATOL = 1e-5, 1e-6
# a row run alone rather than in a batch of 2 is another computation: a matrix kernel may block or sum it in
# another order (a causal Transformer on TensorFlow: 1e-5 apart on logits of 14.6, nc109), so rows count as coupled
# only when they differ by more than this fraction of the output's largest magnitude (a batch-wide mean or max
# moves them by about the data's own spread)
COUPLED_RTOL = 1e-4


def check_deterministic(reference: Any, plan: Any, source: str) -> list[str]:
    """Raise RandomModelError when the Keras model behind `reference` gives other outputs on a second run
    over the same inputs (a batch of 2 from the verification inputs `plan`); nothing for other sources. Returns
    the outputs whose rows depend on the other rows of their batch (rows_coupled)."""
    from ..keras_io.files import call_model
    from .samples import _keras_model
    from .verify import make_inputs

    model = _keras_model(reference)
    if model is None:
        return []
    sig = reference.signature
    other = 8 if any(d is None for s in sig.inputs for d in s.shape[1:]) else None
    feed = make_inputs(sig, 2, other, 7, plan.data, 0, plan.ranges)
    try:  # rows alone too: an any-size MobileNetV2 ran at 8x8 in a batch of 2 and raised for one row (nc76)
        first, second = call_model(model, feed, sig), call_model(model, feed, sig)
        varying = [n for n in first if _differ(first[n], second[n])]
        coupled = [] if varying else rows_coupled(model, feed, sig, first)
    except Exception:  # noqa: BLE001 - a model that cannot run here fails in the parity check with its own reason
        return []
    if not varying:
        return coupled
    fixed = [n for n in first if n not in varying]
    names_varying = ", ".join(repr(n) for n in varying)  # not by how much: each route's draw differs
    keep = ""
    if fixed:
        names = ", ".join(repr(n) for n in fixed)
        keep = (f"; save the outputs that do not as a model of their own, e.g. keras.Model(model.inputs, "
                f"[model.get_layer(n).output for n in ({names}{',' if len(fixed) == 1 else ''})]).save(...),")
    raise RandomModelError(
        f"{source}: output(s) {names_varying} differ between two runs on the same inputs: the model draws random "
        "numbers at inference (keras.random in a layer's call, or a layer run with training=True), so no artifact "
        f"can be checked against it{keep} or convert unchecked with --no-verify")


def rows_coupled(model: Any, feed: dict[str, np.ndarray], sig: Any, together: dict[str, np.ndarray]) -> list[str]:
    """The outputs whose row differs when its input row runs alone rather than in the batch `feed` (of 2): a
    layer that reduces over the batch at inference (Keras' MelSpectrogram clips to `max(spectrogram) - top_db`
    with the max over the whole batch, nc64). Converted faithfully, such a model answers a request by what was
    batched with it; the server runs it one request per call (serving/batcher.py)."""
    from ..keras_io.files import call_model

    alone = [call_model(model, {k: v[i:i + 1] for k, v in feed.items()}, sig) for i in range(2)]
    return [n for n, out in together.items() if np.ndim(out) and np.shape(out)[0] == 2
            and any(_differ(np.asarray(out)[i:i + 1], alone[i][n], COUPLED_RTOL * _scale(out)) for i in range(2))]


def _scale(out: Any) -> float:
    """The largest magnitude of a float output (1 for others or all zeros): what float32's rounding scales with."""
    a = np.asarray(out)
    if a.dtype.kind not in "fc" or not a.size:
        return 1.0
    top = float(np.nanmax(np.abs(a), initial=0.0))
    return top if np.isfinite(top) and top > 0 else 1.0


def _differ(a: Any, b: Any, atol: float = ATOL) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return True
    if a.dtype.kind not in "fc":
        return not np.array_equal(a, b)
    return not np.allclose(a, b, rtol=RTOL, atol=atol, equal_nan=True)
