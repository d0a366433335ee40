"""`keras.ops.einsum` of three or more operands traced as two-operand einsums, left to right (nc95).

TensorFlow's einsum picks the contraction order with opt_einsum from the operands' sizes and writes the
intermediates in the order it likes: an additive attention score `einsum("btd,de,e->bt", tanh(x), W, v)` with
d=48 became `de,btd->ebt` then `ebt,e->bt`, which the TFLite converter lowers to a model that does not load
("tensor ... has an invalid shape [-1, 8, 16]"), and with d=12 `de,e->d` then `btd,d->bt`, which it lowers to the
wrong output shape at an open length ((1, T) for (T, 1): caught by parity). Contracting left to right, each
intermediate keeping its first operand's index order (`btd,de->bte`, `bte,e->bt`: what a user writes by hand),
gives graphs every TF-based edge converts; the sums are the same, and torch contracts so too during exports
(modelkit.converters._torch_export_ops). Equations with an ellipsis, an implicit output or an index repeated within
an operand are left to TensorFlow.
"""
from __future__ import annotations

import functools
from typing import Any, Callable


def pairwise_plan(subscripts: str, count: int) -> list[str] | None:
    """The two-operand equations contracting `count` operands of `subscripts` left to right, or None where this
    does not apply (fewer than three operands, an ellipsis, no '->', an index repeated within an operand)."""
    text = subscripts.replace(" ", "")
    if count < 3 or "..." in text or "->" not in text:
        return None
    ins, out = text.split("->")
    terms = ins.split(",")
    if len(terms) != count or any(len(set(t)) != len(t) for t in terms):
        return None
    plan, acc = [], terms[0]
    for i, term in enumerate(terms[1:], start=1):
        last = i == count - 1
        later = set(out).union(*terms[i + 1:])
        res = out if last else "".join(c for c in acc + "".join(c for c in term if c not in acc) if c in later)
        plan.append(f"{acc},{term}->{res}")
        acc = res
    return plan


def pairwise_einsum(keras_einsum: Callable[..., Any]) -> Callable[..., Any]:
    """Keras' TF einsum, contracting three or more operands left to right by two-operand einsums."""
    @functools.wraps(keras_einsum)
    def einsum(subscripts: str, *operands: Any, **kwargs: Any) -> Any:
        plan = pairwise_plan(subscripts, len(operands)) if isinstance(subscripts, str) else None
        if plan is None:
            return keras_einsum(subscripts, *operands, **kwargs)
        acc = operands[0]
        for equation, operand in zip(plan, operands[1:]):
            acc = keras_einsum(equation, acc, operand, **kwargs)
        return acc

    return einsum
