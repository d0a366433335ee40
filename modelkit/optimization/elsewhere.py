"""Targets whose artifacts run on another machine (edge-arm64, mobile-arm64, edge-armv7): built and gated here,
not measured here.

Their accuracy is the one thing this machine can judge (TFLite and ONNX compute the same on aarch64; a TVM library
for the device is checked by its ELF header, its ONNX source by parity), so every candidate is built with its gate
and marked "not measured here". A latency limit cannot be checked (refused before any work); the choice is the
smallest artifact within the accuracy and size limits, and the decision says, in its first words, that no latency
was measured: measure the winner on the device (`modelkit bench` there) before shipping it.
"""
from __future__ import annotations

from typing import Any

from ..errors import OptimizeError
from .decide import MB, describe_limits

NOT_HERE = "not measured here"


def check_limits(target: str, limits: dict[str, Any]) -> None:
    """A latency limit for another machine's target cannot be checked here: refused before any work."""
    if limits.get("max_p99_ms") is not None:
        raise OptimizeError(f"--max-p99-ms cannot be checked for {target}: its artifacts run on another machine, "
                            "and optimize measures latency only where it runs them (server-cpu here); drop it, and "
                            f"measure the winner on the device with `modelkit bench`")


def unmeasured(candidates: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """The candidates, each built one marked "not measured here" with its accuracy drop from its own gate
    (exact: parity passed, 0; lossy: the drop convert judged on the labelled rows)."""
    out = []
    for c in candidates:
        if c.get("status") != "built":
            out.append(c)
            continue
        accuracy = ((c.get("gate") or {}).get("accuracy") or {})
        drop = 0.0 if c.get("quantize") is None else accuracy.get("drop")
        out.append({**c, "status": NOT_HERE, "accuracy_drop": None if drop is None else float(drop),
                    "reason": f"built and gated here; {target}'s latency is the device's to measure"})
    return out


def choose(candidates: list[dict[str, Any]], limits: dict[str, Any], target: str) -> dict[str, Any]:
    """The smallest candidate within the accuracy and size limits (an exact one first among equal sizes); else
    OptimizeError naming what each missed."""
    max_drop, max_mb = limits.get("max_accuracy_drop"), limits.get("max_size_mb")
    rejected: dict[str, list[str]] = {}
    ok = []
    for c in candidates:
        if c.get("status") != NOT_HERE:
            rejected[c["key"]] = [f"{c.get('status')}: {c.get('reason')}"]
            continue
        missed = []
        drop = c.get("accuracy_drop")
        if max_drop is not None and (drop is None or drop > max_drop):
            missed.append("no labelled data to gate accuracy" if drop is None else
                          f"accuracy drop {drop:.4f} > {max_drop:.4f}")
        mb = (c.get("size_bytes") or 0) / MB
        if max_mb is not None and mb > max_mb:
            missed.append(f"size {mb:.3g} MB > {max_mb:.3g} MB")
        if missed:
            rejected[c["key"]] = missed
        else:
            ok.append(c)
    if not ok:
        said = "; ".join(f"{k}: {', '.join(v)}" for k, v in list(rejected.items())[:3])
        raise OptimizeError(f"no candidate for {target} meets the limits ({describe_limits(limits)}): {said}",
                            {"limits": limits, "rejected": rejected})
    winner = min(ok, key=lambda c: (c.get("size_bytes") or 0, c.get("quantize") is not None))
    drop = winner.get("accuracy_drop")
    judged = "not judged" if drop is None else f"{drop:.4f}"
    why = (f"{winner['key']} chosen by size, latency not measured: {target} runs on another machine. The smallest "
           f"of {len(ok)} within the limits ({describe_limits(limits)}): {(winner.get('size_bytes') or 0) / MB:.3g}"
           f" MB, accuracy drop {judged}. Measure it on the device (modelkit bench) before shipping it.")
    return {"winner": winner["key"], "why": why, "front": [], "rejected": rejected,
            "statistic": "size (latency not measured on this machine)"}
