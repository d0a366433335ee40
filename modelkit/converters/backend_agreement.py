"""Whether Keras computes the source model the same under each backend a conversion loaded it with.

Every hop is verified against the .keras model as Keras runs it under the hop's own backend: TensorFlow for tf2onnx,
the SavedModel and TFLite, torch for TorchScript, .pt2, ExecuTorch and torch.onnx. Each artifact then matches that
backend's Keras, and when the backends disagree the artifacts disagree with each other while every check passes
(nc157: Keras' torch `gaussian_blur` called without `data_format` blurs a channels-last image as if it were
channels-first; the artifacts made under TensorFlow and under torch differed by 0.035 on a softmax). So each
hop from .keras also runs its reference on one small seeded probe batch (`probe`); the parent compares the probes of
different backends that ran on the same inputs (`disagreement`) and warns, naming the formats made under each.
A warning, not a failure: which backend computes what the user trained is theirs to say.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable

import numpy as np

PROBE_BATCH = 2
PROBE_SEED = 7919
PROBE_SIZE = 13  # of open non-batch dimensions (a sequence length, an image side): one of verification's sizes
MAX_VALUES = 512  # of each output, enough to see a difference, small enough to send between processes
RTOL, ATOL = 1e-3, 1e-4  # against the output's largest magnitude: far above float32's own differences between backends


def probe(reference: Any, plan: Any) -> dict[str, Any] | None:
    """The reference's outputs on the probe batch (the verification inputs' first rows, or seeded ones), with
    its backend and a digest of the inputs (`reference`: the .keras source as this process's Keras runs it); None
    when the reference cannot run it."""
    from .._backend import loaded_backend
    from .verify import make_inputs

    backend = loaded_backend()
    if backend is None:
        return None
    try:
        feed = make_inputs(reference.signature, PROBE_BATCH, PROBE_SIZE, PROBE_SEED, plan.data, 0, plan.ranges)
        outs = reference.predict(feed)
    except Exception:  # noqa: BLE001 - a probe the model cannot run says nothing; the hop's own check decides
        return None
    digest = hashlib.sha256()
    for name in sorted(feed):
        digest.update(f"{name}{feed[name].dtype}{feed[name].shape}".encode() + feed[name].tobytes())
    values = {n: np.asarray(o, dtype=np.float64).ravel()[:MAX_VALUES].tolist() for n, o in outs.items()
              if np.asarray(o).dtype.kind in "fiub"}
    return {"backend": backend, "digest": digest.hexdigest(), "outputs": values}


def disagreement(source: str, probes: Iterable[tuple[str, dict[str, Any]]]) -> str | None:
    """A warning when probes (format, probe) of two backends on the same inputs differ beyond RTOL / ATOL, naming
    the largest difference and the formats made under each backend; None when they agree or cannot be compared."""
    by_backend: dict[str, dict[str, Any]] = {}
    formats: dict[str, list[str]] = {}
    for fmt, p in probes:
        by_backend.setdefault(p["backend"], p)
        formats.setdefault(p["backend"], []).append(fmt)
    backends = sorted(by_backend)
    worst: tuple[float, str, str, str] | None = None
    for i, a in enumerate(backends):
        for b in backends[i + 1:]:
            pa, pb = by_backend[a], by_backend[b]
            if pa["digest"] != pb["digest"]:
                continue
            for name, va in pa["outputs"].items():
                vb = pb["outputs"].get(name)
                if vb is None or len(vb) != len(va) or not va:
                    continue
                x, y = np.asarray(va), np.asarray(vb)
                diff = float(np.max(np.abs(x - y)))
                if diff > ATOL + RTOL * float(np.max(np.abs(x))) and (worst is None or diff > worst[0]):
                    worst = (diff, name, a, b)
    if worst is None:
        return None
    diff, name, a, b = worst
    made = "; ".join(f"under {k}: {', '.join(sorted(set(formats[k])))}" for k in (a, b))
    return (f"warning: Keras computes {source} differently under its {a} and {b} backends (max abs difference "
            f"{diff:.2g} on '{name}' at the same inputs); each artifact matches the Keras of the backend it was made "
            f"under ({made}), so they disagree with each other. A backend's own bug or backend-specific code in the "
            "model (e.g. an image op called without data_format) does this: check which backend computes what you "
            "trained (--route torch makes the ONNX file under torch)")
