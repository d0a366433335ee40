"""The shapes a parity check runs at, and what it proved about each dynamic dimension.

Every axis other than the batch that the reference leaves open (a sequence length, an image side)
takes the sizes DYNAMIC_SIZES: 1, an odd size (a 'same' padding baked at an even traced size shows
there) and a long one, rotated across open axes so that two open dims of one input differ within a
case. An axis the candidate fixes (a library compiled for one length) takes the candidate's size.
Sizes the reference itself cannot run at (shorter than a valid convolution) give way to
FALLBACK_SIZES, then to ALIGNED_SIZES, multiples of 32, for a model that takes only multiples of a stride
(a pixel unshuffle, a U-Net's skip connections), then to SHORT_SIZES for a model that takes only a few steps (a
table of 12 positions ran at 1 alone and every conversion was refused: nc133). Per axis, one size serves every
input: two inputs whose lengths must agree still can. After every tier's rotation come the tied cases, every open
axis at one size, for a model whose open axes must agree across inputs and axes: a graph network's node features
(N, F) and adjacency (N, N) run at no rotated case (nc185). They come last so that a model that takes sides apart
is still checked at sides apart (a U-Net that takes multiples of 8: 32 x 96 and 96 x 32).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..spec import Signature, TensorSpec

DYNAMIC_SIZES = (1, 13, 64)
FALLBACK_SIZES = (29, 100, 256)
ALIGNED_SIZES = (32, 96, 160)
SHORT_SIZES = (2, 5, 8)

Sizes = dict[int, int]  # open axis -> size, for one case


def open_axes(sig: Signature) -> list[int]:
    """The non-batch axes that some input leaves open, in order."""
    return sorted({i for s in sig.inputs for i, d in enumerate(s.shape) if i > 0 and d is None})


def fixed_axes(reference_sig: Signature, candidate_sig: Signature) -> Sizes:
    """Open non-batch axes of the reference that the candidate fixes: axis -> the candidate's size."""
    ref = {s.name: s for s in reference_sig.inputs}
    out: Sizes = {}
    for s in candidate_sig.inputs:
        want = ref.get(s.name)
        if want is None or len(want.shape) != len(s.shape):
            continue
        for i, (r, c) in enumerate(zip(want.shape, s.shape)):
            if i > 0 and r is None and c is not None:
                out.setdefault(i, c)
    return out


def size_plans(reference_sig: Signature, candidate_sig: Signature,
               bounds: Mapping[int, tuple[int, int]] | None = None) -> list[Sizes]:
    """Candidate sizes per case, primary first then fallbacks; [{}] when no axis is open. `bounds` (axis -> the
    smallest and largest size a candidate takes: an ExecuTorch program plans memory up to a maximum, and takes sizes
    from the smallest its export runs at) leaves out a tier's sizes outside them, so the rotation still gives every
    axis several sizes the candidate can run (nc115: an any-size EfficientNetB0's program takes 64..128, and every
    case, with one side at 1, 13, 29 or 32, was skipped: "no verification case ran")."""
    axes = open_axes(reference_sig)
    if not axes:
        return [{}]
    fixed = fixed_axes(reference_sig, candidate_sig)
    plans: list[Sizes] = []
    tied: list[Sizes] = []  # every open axis at one size, after every rotation (a size some axis cannot take: none)
    for tier in (DYNAMIC_SIZES, FALLBACK_SIZES, ALIGNED_SIZES, SHORT_SIZES):
        if tier is SHORT_SIZES and any(not _within(tier, (bounds or {}).get(a), strict=True) for a in axes):
            continue  # short sizes a program does not plan for: nothing to add
        per_axis = {a: _within(tier, (bounds or {}).get(a)) for a in axes}
        for j in range(max(len(v) for v in per_axis.values())):
            sizes = {a: fixed.get(a, per_axis[a][(j + k) % len(per_axis[a])]) for k, a in enumerate(axes)}
            if sizes not in plans:
                plans.append(sizes)
        if len(axes) > 1:
            tied += [{a: fixed.get(a, v) for a in axes} for v in tier if all(v in per_axis[a] for a in axes)]
    return plans + [t for i, t in enumerate(tied) if t not in plans and t not in tied[:i]]


def is_tied(sizes: Sizes) -> bool:
    """Whether a plan sets two or more open axes, all at one size (size_plans' tied cases)."""
    return len(sizes) > 1 and len(set(sizes.values())) == 1


def _within(tier: tuple[int, ...], bounds: tuple[int, int] | None, strict: bool = False) -> tuple[int, ...]:
    """The tier's sizes within `bounds`; the whole tier where none is (its cases are then skipped, recorded), or
    none if `strict`."""
    kept = tuple(v for v in tier if bounds is None or bounds[0] <= v <= bounds[1])
    return kept if kept or strict else tier


def axis_bounds(dim_ranges: Mapping[tuple[str, int], tuple[int, int]] | None) -> dict[int, tuple[int, int]]:
    """{(input, axis): (min, max)} of a candidate as axis -> the range every input takes there."""
    out: dict[int, tuple[int, int]] = {}
    for (_, axis), (lo, hi) in (dim_ranges or {}).items():
        was = out.get(axis, (lo, hi))
        out[axis] = (max(lo, was[0]), min(hi, was[1]))
    return out


def case_signature(sig: Signature, sizes: Sizes) -> Signature:
    """`sig` with its open non-batch dims set to `sizes` (the batch stays open)."""
    if not sizes:
        return sig
    return Signature(tuple(TensorSpec(s.name, tuple(sizes.get(i, d) if i > 0 and d is None else d
                                                    for i, d in enumerate(s.shape)), s.dtype)
                           for s in sig.inputs), sig.outputs)


def data_covers_open_dims(sig: Signature, data: Mapping[str, Any] | None) -> bool:
    """Whether real samples feed an input with open non-batch dims (their length is the data's)."""
    return data is not None and any(s.name in data and any(d is None for d in s.shape[1:]) for s in sig.inputs)


def summarize(reference_sig: Signature, candidate_sig: Signature, cases: Iterable[Mapping[str, Any]],
              skipped: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{input: {axis: {...}}} for every axis the reference leaves open (the batch included): whether the
    candidate keeps it dynamic (else the size it fixes), the sizes verified and their range, and sizes
    tried but not verified (the reason is in the report's skipped_cases)."""
    cand = {s.name: s for s in candidate_sig.inputs}
    cases, skipped = list(cases), list(skipped)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for spec in reference_sig.inputs:
        dims: dict[str, dict[str, Any]] = {}
        for axis, d in enumerate(spec.shape):
            if d is not None:
                continue
            seen = sorted({c["shapes"][spec.name][axis] for c in cases if spec.name in c["shapes"]})
            tried = sorted({c["shapes"][spec.name][axis] for c in skipped if spec.name in c.get("shapes", {})})
            own = cand.get(spec.name)
            fixed = own.shape[axis] if own is not None and axis < len(own.shape) else None
            entry: dict[str, Any] = {"dynamic": fixed is None, "verified": [seen[0], seen[-1]] if seen else None,
                                     "sizes": seen}
            if axis == 0:
                entry["role"] = "batch"
            if fixed is not None:
                entry["fixed"] = fixed
            not_run = [t for t in tried if t not in seen]
            if not_run:
                entry["not_verified"] = not_run
            dims[str(axis)] = entry
        if dims:
            out[spec.name] = dims
    return out


def too_few_sizes(summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str | None:
    """A message when an open non-batch dim the candidate keeps dynamic was verified at fewer than 2 sizes."""
    for name, dims in summary.items():
        for axis, entry in dims.items():
            if axis != "0" and entry["dynamic"] and len(entry["sizes"]) < 2:
                return (f"dimension {axis} of input '{name}' is dynamic, but parity could be checked at only "
                        f"{len(entry['sizes'])} size(s) {entry['sizes']} (not at {entry.get('not_verified', [])})")
    return None
