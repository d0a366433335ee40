"""The largest size an open dimension takes, found on an ONNX graph and recorded for every engine.

A model with a learned table of positions (`Embedding(64, d)(arange(length))`, `table[:length]`) runs up to the
table's rows and no further. Past it the engines disagree: onnxruntime, LiteRT, TensorFlow and torch raise their own
errors, while OpenVINO returns plausible garbage and TVM NaN, without a word (nc133, a text classifier with a
64-row position table, at 100 tokens). The ONNX graph shows where such a limit can be: a Gather (or Slice) of a
constant table by indices computed from shapes alone. Each such table's size is a candidate; onnxruntime, which
checks every index, is run just past it along each open axis, and where it fails the largest size that runs is
found by bisection. The hop records it in the manifest (extra.size_limits, carried to every artifact made from
this one) and Model.predict refuses a longer input on every engine (modelkit.runtime.size_limits).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import InputError, ModelkitError, ResourceError, first_line
from ..formats import Format
from ..spec import Signature
from . import _shapes

MAX_CANDIDATE = 4096  # a table larger than this is not probed past (one run at that size can cost seconds)
_TABLE_READS = {"Gather": (0, 1), "Slice": (0, 2)}  # op -> (the table's input, the input computed from shapes)


def table_sizes(onnx_path: str | Path) -> dict[int, str]:
    """{size: the op reading it} of constant tables that the graph reads at positions computed from shapes alone (a
    Gather's indices, a Slice's ends), along the axis read: candidates for the largest size an open dimension
    takes."""
    import onnx

    from .._onnx import constant_values

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    shapes = {i.name: list(i.dims) for i in graph.initializer}  # dims only: external data is not read
    if any(n.op_type == "Constant" for n in graph.node):
        shapes.update({k: list(v.shape) for k, v in constant_values(graph).items() if k not in shapes})
    producers = {o: n for n in graph.node for o in n.output}
    inputs = {i.name for i in graph.input} - set(shapes)
    sizes: dict[int, str] = {}
    for node in graph.node:
        if node.op_type not in _TABLE_READS or len(node.input) <= max(_TABLE_READS[node.op_type]):
            continue
        table, at = (node.input[i] for i in _TABLE_READS[node.op_type])
        if table not in shapes or not _from_shapes(at, producers, inputs, shapes):
            continue
        axis = _gather_axis(node) if node.op_type == "Gather" else 0
        dims = shapes[table]
        if dims and -len(dims) <= axis < len(dims) and 1 < dims[axis] <= MAX_CANDIDATE:
            sizes.setdefault(int(dims[axis]), f"{node.op_type} '{node.name or node.output[0]}'")
    return dict(sorted(sizes.items()))


def _gather_axis(node: Any) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "axis"), 0)


def _from_shapes(name: str, producers: Mapping[str, Any], inputs: set[str], constants: Mapping[str, Any]) -> bool:
    """Whether tensor `name` depends on the graph's inputs through their shapes alone (and on one at least)."""
    seen: set[str] = set()
    stack, shaped = [name], False
    while stack:
        t = stack.pop()
        if t in seen or not t or t in constants:
            continue
        seen.add(t)
        if t in inputs:
            return False  # a value read: ids, not positions
        node = producers.get(t)
        if node is None:
            continue
        if node.op_type in ("Shape", "Size"):
            shaped = True
            continue
        stack.extend(node.input)
    return shaped


def find(model: Any, onnx_path: str | Path, sig: Signature, base: Mapping[int, int],
         ranges: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """{"input:axis": {"max": n, "why": ...}} for the open axes that `model` (a runtime Model of the ONNX at
    `onnx_path`, on onnxruntime) fails past a table's size on. `base`: a size per open axis at which the model ran
    (a verified case); `ranges`: the verification's value ranges (ids inside the model's tables)."""
    candidates = table_sizes(onnx_path)
    axes = _shapes.open_axes(sig)
    if not candidates or not axes or any(a not in base for a in axes):
        return {}
    limits: dict[str, dict[str, Any]] = {}
    for axis in axes:
        ok = base[axis]
        if _fails(model, sig, base, axis, ok, ranges) is not None:  # generated inputs do not run: nothing to learn
            continue
        for n, op in ((c, op) for c, op in candidates.items() if c >= ok):
            reason = _fails(model, sig, base, axis, n + 1, ranges)
            if reason is None:
                ok = n + 1
                continue
            largest, reason = _bisect(model, sig, base, axis, ok, n + 1, reason, ranges)
            why = (f"{op} reads a table of {n} rows at positions computed from this size; onnxruntime fails at "
                   f"{largest + 1}: {reason}")
            for name in _carriers(model, sig, base, axis, largest + 1, ranges):
                limits[f"{name}:{axis}"] = {"max": largest, "why": why}
            break
    return limits


def _carriers(model: Any, sig: Signature, base: Mapping[int, int], axis: int, past: int,
              ranges: Mapping[str, Any] | None) -> list[str]:
    """The inputs open along `axis` whose size there alone makes the model fail at `past` (a source read through
    its table, not a target of another length beside it); all of them when none does alone (lengths that must
    agree: token ids and their mask)."""
    names = [s.name for s in sig.inputs if len(s.shape) > axis and s.shape[axis] is None]
    if len(names) == 1:
        return names
    alone = [n for n in names if _fails(model, sig, base, axis, past, ranges, only=n) is not None]
    return alone or names


def _bisect(model: Any, sig: Signature, base: Mapping[int, int], axis: int, ok: int, bad: int, reason: str,
            ranges: Mapping[str, Any] | None) -> tuple[int, str]:
    """The largest size in [ok, bad) that runs (ok runs, bad fails with `reason`), and the failure past it."""
    while bad - ok > 1:
        mid = (ok + bad) // 2
        failed = _fails(model, sig, base, axis, mid, ranges)
        if failed is None:
            ok = mid
        else:
            bad, reason = mid, failed
    return ok, reason


def _fails(model: Any, sig: Signature, base: Mapping[int, int], axis: int, size: int,
           ranges: Mapping[str, Any] | None, only: str | None = None) -> str | None:
    """The engine's reason when the model fails with `axis` at `size` (in input `only`, else in every input; the
    other open axes at their base sizes), else None. Only the engine's own failures count: a refusal of the input
    (its signature) is not a limit, nor is memory."""
    from .samples import generate

    rng = np.random.default_rng(size)
    long, short = _shapes.case_signature(sig, {**base, axis: size}), _shapes.case_signature(sig, dict(base))
    feed = {}
    for spec, at_base in zip(long.inputs, short.inputs):
        chosen = spec if only is None or spec.name == only else at_base
        feed[spec.name] = generate(chosen, chosen.concrete_shape(1), rng, (ranges or {}).get(spec.name))
    try:
        model.predict(feed)
    except (InputError, ResourceError):
        return None
    except ModelkitError as exc:  # the engine failed running it: its own words, without the file's path
        text = first_line(exc).split("failed running this model: ", 1)[-1]
        text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
        return re.sub(r"^Non-zero status code returned while running \w+ node\. Name:'[^']*' Status Message: ", "",
                      text)[:200]
    return None


def base_sizes(report: Any, sig: Signature) -> dict[int, int]:
    """A size per open axis from the first verified case (the sizes the model ran at)."""
    cases = getattr(report, "cases", None) or []
    if not cases:
        return {}
    shapes = cases[0]["shapes"]
    out: dict[int, int] = {}
    for spec in sig.inputs:
        for axis, dim in enumerate(spec.shape):
            if axis > 0 and dim is None and spec.name in shapes:
                out.setdefault(axis, int(shapes[spec.name][axis]))
    return out


def carried(src_manifest: Any, sig: Signature) -> dict[str, dict[str, Any]]:
    """The limits the source's manifest records, for the inputs and open axes `sig` keeps (read as the runtime
    reads them: modelkit.runtime.size_limits)."""
    from ..runtime.size_limits import size_limits as recorded

    return {f"{name}:{axis}": {"max": largest, "why": why}
            for (name, axis), (largest, why) in recorded(src_manifest, sig).items()}


def for_hop(source: Format, target: Format, src: Path, dest: Path, reference: Any, candidate: Any, report: Any,
            ranges: Mapping[str, Any] | None, src_manifest: Any, sig: Signature) -> tuple[dict[str, Any], bool]:
    """The size limits of a hop's artifact: its source's, else found on the ONNX graph the hop made (keras ->
    onnx, on the candidate) or read (onnx -> openvino / tvm, on the source), once parity held. And whether they
    were found here (to be announced)."""
    limits = carried(src_manifest, sig)
    if limits or report is None or not report.ok:
        return limits, False
    if target == Format.ONNX:
        model, path = candidate, dest
    elif source == Format.ONNX:
        model, path = reference, src
    else:
        return {}, False
    found = find(model, path, sig, base_sizes(report, sig), ranges)
    return found, bool(found)


def said(limits: Mapping[str, Mapping[str, Any]]) -> str:
    """One progress line for the limits a hop found."""
    groups: dict[tuple[int, int, str], list[str]] = {}
    for key, entry in limits.items():
        name, _, axis = key.rpartition(":")
        groups.setdefault((int(axis), int(entry["max"]), str(entry["why"])), []).append(repr(name))
    parts = [f"{' and '.join(names)} take{'s' if len(names) == 1 else ''} at most {largest} along axis {axis}: {why}"
             for (axis, largest, why), names in groups.items()]
    return "; ".join(parts) + "; recorded in the manifest: every engine refuses a longer input with a ShapeError"
