"""What the accuracy gate says: the one-line summary of a judged artifact, its table column, the AccuracyError of one
that drops too much, and the hint for a lossy artifact that failed at another size of an open dimension. The
judging itself (which output, which metric, the accuracies) is modelkit.converters.gate."""
from __future__ import annotations

import math
from typing import Any, Mapping

from ..errors import AccuracyError
from ..spec import Signature
from .gate import BINARY, MAE


def open_size_hint(report: Any, sig: Signature) -> str:
    """For a lossy artifact whose outputs failed the sanity bounds at another size of an open dimension than the
    samples' (the check's first case): what to do. Calibration and the gate saw the samples' size only."""
    from ..keras_io.inputs import input_spec_text

    spec = next((s for s in sig.inputs if any(d is None for d in s.shape[1:])), None)
    if spec is None or not report.cases:
        return ""
    axes = [i for i, d in enumerate(spec.shape) if i > 0 and d is None]

    def sizes(case: int) -> list[int]:
        shape = report.cases[case]["shapes"].get(spec.name, ())
        return [shape[i] for i in axes if i < len(shape)]

    own = sizes(0)
    if not any(o.failed_case is not None and sizes(o.failed_case) != own for o in report.outputs if not o.ok):
        return ""
    return (f". An open dimension is checked at other sizes than the samples' too, and a quantized model is "
            f"calibrated and judged at theirs ({', '.join(map(str, own))}): fix the size you deploy (e.g. "
            f"--input-spec {input_spec_text(spec, fill=own[0] if own else 64)}), or keep it open in float32")


def raise_if_failed(acc: Mapping[str, Any], candidate: str) -> None:
    if acc["ok"]:
        return
    if acc.get("metric") == MAE:
        raise AccuracyError(f"{candidate} ({acc['quantization']}) raises the mean absolute error too much on "
                            f"{acc['data']}: {acc['source_accuracy']:.4g} -> {acc['artifact_accuracy']:.4g}, "
                            f"{acc['drop']:+.2%} > max_accuracy_drop {acc['max_accuracy_drop']:g} (a relative "
                            f"increase for a regressor) ({acc['samples']} samples)", dict(acc))
    raise AccuracyError(f"{candidate} ({acc['quantization']}) loses too much {_metric(acc)} on {acc['data']}: "
                        f"{acc['source_accuracy']:.4f} -> {acc['artifact_accuracy']:.4f}, drop {acc['drop']:.4f} > "
                        f"max_accuracy_drop {acc['max_accuracy_drop']:g} ({acc['samples']} samples){_few(acc)}",
                        dict(acc))


def _few(acc: Mapping[str, Any]) -> str:
    """The hint for a set so small that one changed answer is above the allowed drop (48 samples: 0.0208 > 0.01)."""
    n = int(acc.get("samples") or 0)
    if n <= 0 or acc.get("positions_per_sample") or 1 / n <= acc["max_accuracy_drop"]:
        return ""
    return (f"; one sample is {1 / n:.4f} of {n}, so on this set the gate allows no changed answer: judge on more "
            f"labelled samples (--eval-data), or allow one with --max-accuracy-drop {math.ceil(1000 / n) / 1000:g}")


def _metric(acc: Mapping[str, Any]) -> str:
    name = "binary accuracy" if acc.get("metric") == BINARY else "accuracy"
    return f"{name} per position" if acc.get("positions_per_sample") else name


def summary(acc: Mapping[str, Any]) -> str:
    ignored = acc.get("positions_ignored_by")
    where = "" if not ignored else (f" ({acc['positions_judged']} of {acc['samples'] * acc['positions_per_sample']} "
                                    f"positions judged; the rest ignored by {ignored})")
    where += _choice(acc)
    chain = acc.get("max_accuracy_drop_of_chain")
    if acc.get("metric") == MAE:
        head = f"MAE {'OK' if acc['ok'] else 'FAILED'}"
        left = "" if chain is None else f", what the source's own increase left of +{chain:.2%}"
        return (f"{head}: {acc['source_accuracy']:.4g} -> {acc['artifact_accuracy']:.4g} ({acc['drop']:+.2%}, max "
                f"+{acc['max_accuracy_drop']:.2%}{left}) on {acc['samples']} samples of {acc['data']}{where}")
    head = f"{_metric(acc)} {'OK' if acc['ok'] else 'FAILED'}"
    left = "" if chain is None else f", what the source's own drop left of {chain:g}"
    return (f"{head}: {acc['source_accuracy']:.4f} -> {acc['artifact_accuracy']:.4f} (drop {acc['drop']:+.4f}, "
            f"max {round(acc['max_accuracy_drop'], 4):g}{left}) on {acc['samples']} samples of {acc['data']}{where}")


def _choice(acc: Mapping[str, Any]) -> str:
    """Which output was judged, when the model has several; when the labels fit several (gate.judge_on), the
    source's score on each."""
    scores = acc.get("source_accuracy_per_output")
    if not scores:  # one output fits: named when the model has others (a reconstruction beside its code)
        return f"; judged on output '{acc['output']}'" if acc.get("model_outputs", 1) > 1 and acc.get("output") else ""
    what = "MAE" if acc.get("metric") == MAE else "accuracy"
    each = ", ".join(f"'{k}' {v:.4g}" for k, v in scores.items())
    return f"; judged on output '{acc['output']}', where the labels fit several (the source's {what}: {each})"


def short(acc: Mapping[str, Any]) -> str:
    """The accuracy column of a table: '0.9861 (+0.0000)', or 'MAE 0.0712 (+0.4%)' for a regressor."""
    if acc.get("metric") == MAE:
        return f"MAE {acc['artifact_accuracy']:.3g} ({acc['drop']:+.1%})"
    return f"{acc['artifact_accuracy']:.4f} ({acc['drop']:+.4f})"
