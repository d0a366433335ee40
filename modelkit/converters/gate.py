"""The accuracy gate of lossy artifacts: which output the labels judge, how, and the verdict.

A quantized artifact is not expected to match its source to 1e-4, so it is judged on the task: the accuracy
of source and artifact on labelled data, and the drop between them. The labels decide the metric:

- class ids (or one-hot rows, per-class scores: their argmax) judge the first output of shape (batch, classes),
  classes > 1, by **top-1** accuracy;
- 0/1 labels judge a model whose outputs have one column (a single-sigmoid or single-logit binary classifier)
  by **binary** accuracy on its first such output;
- multi-hot rows (0/1, several or no 1s per row: a multi-label tagger) judge the first output with as many
  columns, by **binary** accuracy over every tag;
- labels per position (a segmentation mask (N, H, W) of class ids, a tagger's (N, T) token classes, or their
  one-hot form) judge the first output of shape (batch, *the labels' positions*, classes) by **top-1 per
  position** (pixel / token accuracy); 0/1 masks judge a (batch, *positions*[, 1]) output by binary accuracy per
  position. Positions no one reads are not judged: those a Keras source masks (Embedding(mask_zero=True),
  Masking: the padding of a token tagger, whose predictions its masked loss never trained), and those labelled
  below 0 (-1, -100: the usual "ignore" label) or by an all-zero one-hot row.

A binary decision is a score above 0.5 when the model's scores on the data all lie in [0, 1] (probabilities,
with 0.01 of slack for an int8 sigmoid's rounding), else above 0 (logits); each model's threshold is read from
its own scores and recorded.

A regressor's targets (real values, or integers beyond what a class output takes: counts on a one-column
output) judge the first output of their shape by the **mean absolute error** (MAE); its "drop" is the relative
increase of the artifact's MAE over the source's ((a - s) / s: 0.01 = 1 % more error), limited by the same
max_accuracy_drop.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import ConversionError, InputError, ModelkitError
from ..spec import Signature
from .samples import predict_rows

EVAL_BATCH = 256
TOP1, BINARY, MAE = "top-1", "binary", "mae"
CONVERT_FIX = "convert without --quantize (the float formats are gated by parity)"
_PROBABILITY_SLACK = 0.01


@dataclass(frozen=True)
class Judge:
    """The output labels judge and the metric: TOP1 (class ids), BINARY (0/1 labels or multi-hot rows) or MAE (a
    regressor's targets); `dense` when every position of a sample (pixel, token) is judged."""

    output: str
    metric: str
    dense: bool = False


def read_labels(y: np.ndarray, p: Path, fix: str = CONVERT_FIX) -> np.ndarray:
    """Labels as the gate takes them: class ids as int64, (N,) or one per position (N, *positions) (one-hot rows
    and per-class scores by their argmax, a trailing axis of 1 dropped), a multi-hot (N, tags) matrix as int8, or
    a regressor's real-valued targets as float64 (their shape kept, a trailing axis of 1 dropped). Values that are
    not finite numbers are an InputError ending with `fix`."""
    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] == 1:
        y = y[..., 0]
    if y.ndim >= 2 and len(y):
        zero_one = bool(np.isin(y, (0, 1)).all())
        if zero_one and (y.sum(axis=-1) == 1).all() and y.shape[-1] > 1:
            return np.argmax(y, axis=-1).astype(np.int64)  # one-hot, per row or per position
        if zero_one and y.ndim >= 3 and y.shape[-1] > 1 and (y.sum(axis=-1) <= 1).all() and y.any():
            return np.where(y.any(axis=-1), np.argmax(y, axis=-1), -1).astype(np.int64)  # all-zero rows: padding
        if zero_one and y.ndim == 2:
            return y.astype(np.int8)
        if y.ndim == 2 and y.dtype.kind == "f" and not _integral(y) and _distributions(y):
            return np.argmax(y, axis=-1).astype(np.int64)  # per-class scores (soft labels)
    if y.dtype.kind not in "iubf":
        raise InputError(f"{p}: 'y' holds values that are neither labels nor targets (dtype {y.dtype}): the "
                         f"accuracy gate needs class ids, one-hot or multi-hot rows, or a regressor's numbers; {fix}")
    if y.dtype.kind == "f":
        bad = y.reshape(-1)[~np.isfinite(y.reshape(-1))][:1]
        if len(bad):
            raise InputError(f"{p}: 'y' holds {bad[0].item()!r}: labels and targets must be finite numbers; {fix}")
        if not _integral(y):
            return y.astype(np.float64)  # a regressor's targets
    return y.astype(np.int64)


def _distributions(y: np.ndarray) -> bool:
    """Rows of per-class scores (soft labels: each in [0, 1], summing to 1), not a regressor's (N, k) targets."""
    return bool(np.isfinite(y).all() and (y >= 0).all() and (y <= 1).all() and np.allclose(y.sum(axis=-1), 1,
                                                                                             atol=1e-3))


def _integral(y: np.ndarray) -> bool:
    return bool(np.isfinite(y).all() and (y == np.round(y)).all())


def _rank2(sig: Signature) -> list[tuple[str, int]]:
    return [(s.name, int(s.shape[1] or 0)) for s in sig.outputs if s.rank == 2]


def _dense_outputs(sig: Signature) -> list[Any]:
    return [s for s in sig.outputs if s.rank >= 3]


def _none_message(sig: Signature) -> str:
    return (f"no output among {sig.output_names} to measure accuracy on: a quantized artifact is judged by "
            "accuracy on labelled data, which needs an output of shape (batch, classes) (top-1 on class ids), "
            "(batch, 1) (binary, on 0/1 labels), (batch, tags) (binary, on multi-hot rows), (batch, *positions, "
            "classes) (top-1 per position, on a class id per position) or any shape of a regressor's targets "
            "(mean absolute error)")


def _fits(dims: tuple[Any, ...], sizes: tuple[int, ...]) -> bool:
    return len(dims) == len(sizes) and all(d is None or int(d) == n for d, n in zip(dims, sizes))


def _judge_dense(sig: Signature, labels: np.ndarray) -> Judge:
    """The Judge of labels with one class id per position (N, *positions): the first output of shape (batch,
    *positions, classes) by top-1 per position, or, for 0/1 labels, (batch, *positions[, 1]) by binary accuracy."""
    positions = tuple(int(n) for n in labels.shape[1:])
    judged = labels[labels >= 0]  # below 0: positions not judged (padding)
    zero_one = bool(np.isin(judged, (0, 1)).all())
    for s in _dense_outputs(sig) + [s for s in sig.outputs if s.rank == 2]:
        dims = tuple(s.shape[1:])
        width = dims[-1] if len(dims) == len(positions) + 1 else None
        if width is not None and _fits(dims[:-1], positions) and (width or 0) > 1:
            _check_range(judged, s.name, int(width))
            return Judge(s.name, TOP1, dense=True)
        if zero_one and (_fits(dims, positions) or (width == 1 and _fits(dims[:-1], positions))):
            return Judge(s.name, BINARY, dense=True)
    want = ", ".join(map(str, positions))
    raise ConversionError(f"'y' holds a class id per position, of shape (N, {want}), and no output among "
                          f"{sig.output_names} has shape (batch, {want}, classes) to judge them by top-1 per position"
                          f"{'' if not zero_one else f' or (batch, {want}[, 1]) for binary accuracy per position'}")


def _check_range(labels: np.ndarray, output: str, classes: int) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise InputError(f"'y' holds labels {labels.min()}..{labels.max()}; the model's output "
                         f"'{output}' has {classes} classes (labels 0..{classes - 1})")


def judge(sig: Signature, labels: np.ndarray | None = None) -> Judge:
    """The Judge of `labels` (read_labels') on a model of signature `sig`; without labels, the top-1 judge
    when the model has a class output, else its first one-column output, else its first output with positions,
    else its first (batch,) output by MAE (labels decide later). Integer labels no class judgement takes (counts on
    a one-column output) are a regressor's targets too. A ConversionError when nothing can judge them."""
    if labels is not None and labels.dtype.kind == "f":
        return _judge_regression(sig, labels)
    try:
        return _judge_classes(sig, labels)
    except ConversionError as exc:
        if labels is not None:  # integer targets no class judgement takes; the class reason if none fits either
            try:
                return _judge_regression(sig, labels)
            except ConversionError:
                raise exc from None
        flat = next((s.name for s in sig.outputs if s.rank == 1), None)
        if flat is None:
            raise
        return Judge(flat, MAE)


def _squeezed(dims: tuple[Any, ...]) -> tuple[Any, ...]:
    while dims and dims[-1] == 1:
        dims = dims[:-1]
    return dims


def _judge_regression(sig: Signature, targets: np.ndarray) -> Judge:
    """The first output whose per-row shape is the targets' (trailing axes of 1 aside), judged by MAE."""
    want = _squeezed(tuple(int(n) for n in targets.shape[1:]))
    for s in sig.outputs:
        if _fits(_squeezed(tuple(s.shape[1:])), want):
            return Judge(s.name, MAE)
    shape = ", ".join(["N", *map(str, want)])
    raise ConversionError(f"'y' holds a regressor's targets of shape ({shape}), and no output among "
                          f"{sig.output_names} has that shape per row to judge them by mean absolute error")


def _judge_classes(sig: Signature, labels: np.ndarray | None) -> Judge:
    outputs = _rank2(sig)
    if labels is not None and labels.ndim == 2 and labels.dtype == np.int8:  # multi-hot rows
        tags = labels.shape[1]
        found = next((name for name, width in outputs if width == tags), None)
        if found is not None:
            return Judge(found, BINARY)
        try:  # or 0/1 class ids per token
            return _judge_dense(sig, labels.astype(np.int64))
        except ConversionError:
            raise ConversionError(f"'y' holds multi-hot rows of {tags} tags, and no output among {sig.output_names}"
                                  f" has shape (batch, {tags}) to judge them by binary accuracy") from None
    if labels is not None and labels.ndim >= 2:
        return _judge_dense(sig, labels)
    classes = next(((name, width) for name, width in outputs if width > 1), None)
    if classes is not None:
        if labels is not None:
            _check_range(labels, *classes)
        return Judge(classes[0], TOP1)
    single = next((name for name, width in outputs if width == 1), None)
    if single is None:
        dense = _dense_outputs(sig)
        if labels is None and dense:  # a segmentation map, a token tagger: judged per position once labels come
            return Judge(dense[0].name, TOP1 if (dense[0].shape[-1] or 0) > 1 else BINARY, dense=True)
        raise ConversionError(_none_message(sig))
    if labels is not None and not np.isin(labels, (0, 1)).all():
        raise ConversionError(f"'y' holds labels {labels.min()}..{labels.max()}, and the model's outputs "
                              f"{sig.output_names} have one column: they are judged by binary accuracy on 0/1 "
                              "labels, or by mean absolute error on a regressor's targets")
    return Judge(single, BINARY)


def fitting(sig: Signature, labels: np.ndarray) -> list[Judge]:
    """Every output `labels` fit as judge() judges them (the same per-position reading; an accuracy beside an
    accuracy, top-1 or binary, a mean absolute error beside its own kind): judge()'s own first, then the others in
    the model's order. Several when a model has two heads of a fitting shape (a 16-wide embedding before a 10-class
    softmax: class ids 0..9 fit both; 0/1 labels fit the embedding's columns and a one-column sigmoid: nc92's
    recommender answering a score and the user's vector)."""
    first = judge(sig, labels)
    found = [first]
    for spec in sig.outputs:
        if spec.name == first.output:
            continue
        try:
            other = judge(Signature(sig.inputs, (spec,)), labels)
        except ModelkitError:
            continue
        if other.dense == first.dense and (other.metric == first.metric or MAE not in (other.metric, first.metric)):
            found.append(other)
    return found


def judge_on(model: Any, inputs: Mapping[str, np.ndarray], labels: np.ndarray) -> tuple[Judge, dict[str, float]]:
    """The Judge of `labels` and, when several outputs fit them (fitting()), the score of `model` (the source)
    on each: the output judged is the one these labels describe best, the highest accuracy (the lowest mean
    absolute error for a regressor's targets), not the first that fits (an embedding head judged on class ids
    scored 0.03 where the class head scored 0.83). The scores are {} when one output fits."""
    found = fitting(model.signature, labels)
    if len(found) == 1:
        return found[0], {}
    scores = {j.output: accuracy(model, inputs, labels, j)[0] for j in found}
    pick = min if found[0].metric == MAE else max
    best = pick(found, key=lambda j: scores[j.output])  # ties: the first in the model's order
    return best, scores


def check_judgeable(sig: Signature, labels: np.ndarray | None = None) -> Judge:
    """judge(), its ConversionError made the user's InputError (their --quantize, which no route would judge
    better), with the fix."""
    try:
        return judge(sig, labels)
    except ConversionError as exc:
        raise InputError(f"{exc}; {CONVERT_FIX}") from exc


def threshold(scores: np.ndarray) -> float:
    """0.5 for probabilities (every score within [0, 1], with slack), else 0 (logits)."""
    if scores.size == 0:
        return 0.5
    lo, hi = float(np.min(scores)), float(np.max(scores))
    return 0.5 if lo >= -_PROBABILITY_SLACK and hi <= 1 + _PROBABILITY_SLACK else 0.0


def decisions(model: Any, inputs: Mapping[str, np.ndarray], j: Judge) -> tuple[np.ndarray, float | None]:
    """What `model` decides for every row: its top-1 class (N,), or its 0/1 decision per column (N, columns)
    with the threshold read from its scores; predicted in chunks of EVAL_BATCH (or of a fixed batch)."""
    if min((len(a) for a in inputs.values()), default=0) == 0:
        return np.zeros(0, dtype=np.int64), None
    scores = predict_rows(model, inputs, EVAL_BATCH)[j.output]
    if j.metric == TOP1:
        return np.argmax(scores, axis=-1), None
    t = threshold(scores)
    return (scores > t).astype(np.int8), t


def accuracy(model: Any, inputs: Mapping[str, np.ndarray], labels: np.ndarray, j: Judge
             ) -> tuple[float, np.ndarray, float | None]:
    """(accuracy, decisions, threshold) of `model` on labelled rows under judge `j`; for MAE, (the mean absolute
    error, the outputs, None)."""
    if j.metric == MAE:
        if not labels.size:
            return 0.0, np.zeros(labels.shape), None
        out = predict_rows(model, inputs, EVAL_BATCH)[j.output].astype(np.float64).reshape(labels.shape)
        errors = np.abs(out - labels)[~np.isnan(labels)]  # NaN: a position the source masks, not judged
        return (float(np.mean(errors)) if errors.size else 0.0), out, None
    made, t = decisions(model, inputs, j)
    if made.size == labels.size:  # (N, 1) decisions of a one-column output, a mask's trailing axis of 1
        made = made.reshape(labels.shape)
    right = made == labels
    if j.dense:  # positions labelled below 0 are not judged (padding)
        right = right[labels >= 0]
    return (float(np.mean(right)) if right.size else 0.0), made, t


def predict_classes(model: Any, inputs: Mapping[str, np.ndarray], output: str) -> np.ndarray:
    """Top-1 class of every row of `output`."""
    return decisions(model, inputs, Judge(output, TOP1))[0]


def accuracy_gate(reference: Any, candidate: Any, inputs: Mapping[str, np.ndarray], labels: np.ndarray,
                  max_drop: float, label: str, mode: str) -> dict[str, Any]:
    """Accuracy of source and artifact on labelled data; `ok` is False when the drop exceeds max_drop. For MAE,
    `source_accuracy` / `artifact_accuracy` hold the mean absolute errors and `drop` their relative increase."""
    j, chosen = judge_on(reference, inputs, labels)
    labels, masked = masked_labels(reference, inputs, labels, j)
    src_acc, ref, t_ref = accuracy(reference, inputs, labels, j)
    art_acc, cand, t_cand = accuracy(candidate, inputs, labels, j)
    judged = ~np.isnan(labels) if j.metric == MAE else labels >= 0 if j.dense else np.ones(labels.shape, bool)
    if j.metric == MAE:
        drop = art_acc / max(src_acc, 1e-12) - 1.0
        moved = np.abs(ref - cand)[judged]
        out = {"ok": bool(drop <= max_drop + 1e-12), "quantization": mode, "data": label, "samples": len(labels),
               "output": j.output, "metric": MAE, "source_accuracy": float(f"{src_acc:.6g}"),
               "artifact_accuracy": float(f"{art_acc:.6g}"), "drop": round(drop, 6), "max_accuracy_drop":
               float(max_drop), "output_mae": float(f"{np.mean(moved) if moved.size else 0:.6g}")}
        if masked:
            out.update(positions_per_sample=int(labels[0].size), positions_judged=int(judged.sum()),
                       positions_ignored_by=masked)
        return _with_choice(out, chosen, len(reference.signature.outputs))
    drop = src_acc - art_acc
    out = {"ok": bool(drop <= max_drop + 1e-12), "quantization": mode, "data": label, "samples": len(labels),
           "output": j.output, "metric": j.metric, "source_accuracy": round(src_acc, 6),
           "artifact_accuracy": round(art_acc, 6), "drop": round(drop, 6), "max_accuracy_drop": float(max_drop),
           "argmax_agreement" if j.metric == TOP1 else "decision_agreement":
           round(float(np.mean((ref == cand)[judged])) if judged.any() else 0.0, 6)}
    if j.metric == BINARY:
        out["threshold"] = {"source": t_ref, "artifact": t_cand}
    if j.dense:
        out["positions_per_sample"] = int(labels[0].size) if len(labels) else 0
        out["positions_judged"] = int(judged.sum())
        if not judged.all():
            out["positions_ignored_by"] = masked or "labels below 0"
    return _with_choice(out, chosen, len(reference.signature.outputs))


def _with_choice(out: dict[str, Any], scores: Mapping[str, float], outputs: int) -> dict[str, Any]:
    """The gate's report with, when several outputs fit the labels, the source's score on each (judge_on), and the
    model's output count (the verdict names the judged output when there are several)."""
    if scores:
        out["source_accuracy_per_output"] = {k: float(f"{v:.6g}") for k, v in scores.items()}
    out["model_outputs"] = outputs
    return out


def left_by(src_manifest: Any, max_drop: float, label: str) -> float:
    """What a quantized source's own drop (its manifest's accuracy record, on the same data) leaves of max_drop for
    an exact hop from it, so that the chain stays within max_drop of the float model: max_drop - drop, or for a
    regressor's relative MAE increase (1 + max_drop) / (1 + increase) - 1; never below 0. max_drop when the
    source has no record on that data."""
    record = ((getattr(src_manifest, "extra", None) or {}).get("accuracy") or {}) if src_manifest else {}
    if record.get("data") != label or "drop" not in record:
        return max_drop
    drop = float(record["drop"])
    left = (1 + max_drop) / (1 + drop) - 1 if record.get("metric") == MAE else max_drop - drop
    return max(0.0, round(left, 9))


def masked_labels(reference: Any, inputs: Mapping[str, np.ndarray], labels: np.ndarray, j: Judge
                  ) -> tuple[np.ndarray, str | None]:
    """`labels` with -1 (not judged; NaN for a regressor's targets) where the Keras source masks `j.output` (a
    token tagger's padding, a per-step regressor's), and what masked them; unchanged (and None) for other judges,
    sources without masks (a reference with no `masks` reader: not Keras), or a mask of another shape. The mask
    is read in chunks of EVAL_BATCH, stopping at the first chunk without one."""
    reader = getattr(reference, "masks", None)
    if not (j.dense or j.metric == MAE) or reader is None or not len(labels):
        return labels, None
    parts = []
    for start in range(0, len(labels), EVAL_BATCH):
        mask = reader({k: v[start:start + EVAL_BATCH] for k, v in inputs.items()}).get(j.output)
        if mask is None:
            return labels, None
        parts.append(mask)
    mask = np.concatenate(parts)
    if mask.size != labels.size:
        return labels, None
    return np.where(mask.reshape(labels.shape), labels, np.nan if j.metric == MAE else -1), "the source model's mask"
