"""Dynamic dimensions for the torch edges (TorchScript, .pt2).

Every dimension the Keras model leaves open stays open: torch.export gets a named `Dim` for each (the batch `batch`,
any other `<input>_<axis>`, minimum 1, no maximum); when torch cannot prove those ranges (a valid convolution needs
a longer sequence) the export is repeated with `Dim.AUTO`, which lets torch narrow a range or fix a dimension, first
with size-oblivious reasoning (no hidden `size != 1` guards), then without. A dimension torch fixes (a recurrent
layer's Python loop over time, a kernel that reads a size as a Python int) is refused with
UnsupportedConversionError naming the dimension, the layer where it was fixed, and the formats that keep it open.
The layer is found by watching the trace (modelkit.converters._torch_watch): a forward hook on every Keras layer
notes the first one after which the input's size symbol became a constant. The example the model is traced at has
its open sizes at 8, 10, ...; a model that runs only at multiples of a stride (a U-Net, an any-size
keras.applications network) is traced at 64, 96, ... instead (fit_examples, at load). A program may still guard
sizes below its example (torch's memory-format checks ask whether a feature map is 1 high): `lowest_sizes` finds the
smallest size from which it runs, and the range recorded starts there.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

from ..errors import ConversionError, UnsupportedConversionError, first_line
from ..spec import Signature
from ._torch_examples import example_size, inputs_at, open_axes, shape_at, unfit_hint  # noqa: F401
from ._torch_watch import resolved, watch

# formats whose TensorFlow trace keeps every open dimension symbolic (verified on the tests' models)
KEEP_DYNAMIC = "onnx, saved_model"
# sizes of open non-batch dims a trace is checked at (traced at example_size): 13 to 16 cover every residue of a
# size, its half and its quarter, which a program's guards may test (a "same" padding's parity, nc75)
CHECK_LENGTHS = (1, 13, 14, 15, 16)
Ranges = dict[tuple[str, int], list[int | None] | None]  # (input, axis) -> [min, max or None]; None: fixed
Bounds = tuple[int, int]  # the largest batch, the largest size of every other open dim (executorch plans for them)


def export(module: Any, sig: Signature, example: tuple[Any, ...], src_name: str, fmt: str = "pt2",
           bounds: Bounds | None = None) -> tuple[Any, dict[tuple[str, int], list[int | None] | None]]:
    """torch.export of `module` with every open dimension dynamic, checked against the eager model at other
    batches and sizes (checked()); the program and the ranges() it accepts. Typed errors where torch cannot,
    naming the format `fmt` the program is made for. `bounds` (largest batch, largest other open size): the
    upper ends of the ranges, for a program that plans memory ahead (executorch); default none."""
    with symbolic_sizes():
        program, accepted = _export(module, sig, example, src_name, fmt, bounds)
    return program, accepted if accepted is not None else checked(program, module, sig, fmt)


def checked(program: Any, module: Any, sig: Signature, fmt: str) -> Ranges:
    """The ranges() `program` accepts, once it agrees with the eager `module` at batches 1 and 5 and at the checked
    sizes it accepts; a typed error where it does not."""
    from ._torch_module import check_batches

    accepted = ranges(program, sig)
    check_batches(program.module(), module, sig, "the exported program")
    accepted = lowest_sizes(program.module(), module, sig, fmt, accepted)
    check_lengths(program.module(), module, sig, "torch.export", fmt, accepted=accepted)
    return accepted


def lowest_sizes(traced: Any, reference: Any, sig: Signature, fmt: str, accepted: Ranges) -> Ranges:
    """`accepted` with the lower bound of every open non-batch dim raised to the smallest size from which the program
    runs at every size up to its example (all open dims at that size), where it guards a smaller size the Keras model
    runs at: ranges() cannot see such guards (nc76: an any-size MobileNetV2 traced at 64x96 guards its feature maps'
    sizes, so it accepts from 63, not 2). Tried downwards from the example to the first guard; sizes the Keras model
    cannot run at are skipped; a size where the program runs but answers otherwise is refused, as in check_lengths."""
    axes = open_axes(sig)
    if not axes or any(accepted.get(k) is None for k in axes):
        return accepted
    floor = low = max(accepted[k][0] or 1 for k in axes)  # type: ignore[index]
    for size in range(min(example_size(a) for _, a in axes) - 1, low - 1, -1):
        verdict = _at_size(traced, reference, sig, size, 1e-4)
        if verdict == "wrong":
            raise UnsupportedConversionError(refusal(fmt, "torch.export", *axes[0], None, size))
        if isinstance(verdict, BaseException):  # a guard: the range starts above it
            floor = size + 1
            break
    if floor == low:
        return accepted
    return {k: ([max(r[0] or 1, floor), r[1]] if k in axes and r is not None else r) for k, r in accepted.items()}


@contextlib.contextmanager
def symbolic_sizes() -> Iterator[None]:
    """Let Keras ops take torch's symbolic sizes where they take Python numbers: under torch.export,
    `ops.shape(x)[1]` is a `torch.SymInt`, and Keras infers dtypes from Python types only (e.g.
    `ops.arange(ops.shape(x)[1])`, common in position embeddings, fails with "Invalid dtype: SymInt"); and the
    Keras ops whose torch code fixes an open batch, written without it (_torch_export_ops.py)."""
    from unittest import mock  # the standard library's dict patching, restored on exit

    import torch
    from keras.src.backend.common import dtypes

    from ._torch_export_ops import batch_keeping_ops

    known = dtypes.PYTHON_DTYPES_MAP
    with mock.patch.dict(known, {torch.SymInt: known[int], torch.SymFloat: known[float], torch.SymBool: known[bool]}), \
            batch_keeping_ops():
        yield


def _export(module: Any, sig: Signature, example: tuple[Any, ...], src_name: str, fmt: str,
            bounds: Bounds | None) -> tuple[Any, Any]:
    """The program, with its checked() ranges where a size-oblivious attempt was checked already (else None)."""
    import torch

    with watch(module, sig) as seen:
        try:
            return torch.export.export(module, example, dynamic_shapes=(_dims(sig, auto=False, bounds=bounds),),
                                          strict=False), None
        except (RuntimeError, TypeError, ValueError) as exc:  # torch's UserError is a RuntimeError
            first = exc
    if not open_axes(sig):
        raise ConversionError(f"torch.export could not export {src_name} with a dynamic batch: "
                              f"{first_line(first)}{batch_fixed_by(seen)}") from first
    program = None
    # let torch narrow the ranges (or fix dims, refused below): size-oblivious from 1, then from 2 (its program may
    # guard `L != 1`: a strided convolution's, nc75), then as torch does by default
    for oblivious, smallest in ((True, 1), (True, 2), (False, 1)):
        with watch(module, sig) as seen, size_oblivious(oblivious):
            try:
                program = torch.export.export(module, example, strict=False,
                                              dynamic_shapes=(_dims(sig, auto=True, smallest=smallest, bounds=bounds),))
            except (RuntimeError, TypeError, ValueError) as exc:
                if not oblivious:
                    # a layer that made an open dim a constant: named (nc79: a generic RNN's Python loop over
                    # time, "Constraints violated")
                    fixed = next(((key, layer) for key, layer in seen.items() if key[1] > 0), None)
                    if fixed is not None:
                        (name, axis), layer = fixed
                        raise UnsupportedConversionError(refusal(fmt, "torch.export", name, axis, layer)) from exc
                    raise ConversionError(f"torch.export could not export {src_name} with its dynamic dimensions: "
                                          f"{first_line(first)}{batch_fixed_by(seen)}{unfit_hint(sig)}") from exc
                continue
        if any(r is None for r in ranges(program, sig).values()):
            continue
        if not oblivious:
            return program, None
        accepted = _holding(program, module, sig, fmt)
        if accepted is not None:
            return program, accepted
    assert program is not None  # the last attempt returned a program or raised
    name, axis = next(k for k, r in ranges(program, sig).items() if r is None)
    raise UnsupportedConversionError(refusal(fmt, "torch.export", name, axis, seen.get((name, axis))))


def _holding(program: Any, module: Any, sig: Signature, fmt: str) -> Any:
    """checked() of a size-oblivious program, None where it fails (size-oblivious reasoning may get size 1 wrong: a
    U-Net's came with a guard `batch > 1`), so the next attempt runs."""
    try:
        return checked(program, module, sig, fmt)
    except (ConversionError, RuntimeError, AssertionError):  # a refusal, or a guard of the program at batch 1
        return None


def size_oblivious(on: bool) -> Any:
    """torch's size-oblivious reasoning about sizes (`backed_size_oblivious`) while `on`: a size torch cannot prove
    is not 1 (a pooled length, L // 4) is taken as not 1, where otherwise the program keeps a guard `L // 4 != 1`
    that ranges() cannot see, refusing sizes the Keras model runs at (nc75: lengths 4 to 7). Tried first when the
    exact export fails; a program it gets wrong at size 1 is refused by check_lengths and check_batches."""
    import torch.fx.experimental._config as fx_config

    return fx_config.patch(backed_size_oblivious=on)


def ranges(program: Any, sig: Signature) -> dict[tuple[str, int], list[int | None] | None]:
    """(input, axis) -> [min, max or None] that the exported program accepts, None where it fixed the
    dimension, for every open dimension of `sig` (batch included)."""
    out: dict[tuple[str, int], list[int | None] | None] = {}
    for name, axis, expr in _open_dim_symbols(program, sig):
        if expr is None:  # specialized to the example size
            out[(name, axis)] = None
            continue
        vr = program.range_constraints.get(expr)
        lo = _bound(vr.lower) if vr is not None else None
        out[(name, axis)] = [1 if lo is None else lo, _bound(vr.upper) if vr is not None else None]
    return out


def ties(program: Any, sig: Signature) -> list[list[str]]:
    """Groups ("input:axis", ...) of the open non-batch dimensions that `program` computes as one size (torch.export
    tied them: a graph network's node features (N, F) and adjacency (N, N), nc185); [] when every one is free."""
    groups: dict[str, list[str]] = {}
    for name, axis, expr in _open_dim_symbols(program, sig):
        if axis > 0 and expr is not None:
            groups.setdefault(str(expr), []).append(f"{name}:{axis}")
    return [g for g in groups.values() if len(g) > 1]


def _open_dim_symbols(program: Any, sig: Signature) -> Iterator[tuple[str, int, Any]]:
    """(input, axis, the size's symbol in `program`, None where the export fixed it) for every open dimension of
    `sig`, batch included, reading the program's user-input placeholders in the signature's order."""
    import torch

    by_name = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    users = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    for spec, arg in zip(sig.inputs, users):
        shape = by_name[arg].meta["val"].shape
        for axis, d in enumerate(spec.shape):
            if d is not None:
                continue
            got = shape[axis]
            expr = resolved(got.node) if isinstance(got, torch.SymInt) else None
            yield spec.name, axis, None if expr is None or expr.is_number else expr


def _bound(value: Any) -> int | None:
    """A range bound as an int; None for torch's infinity (or any bound past 2**31, i.e. unbounded)."""
    try:
        number = int(value)
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None
    return number if abs(number) < 2**31 else None


def check_lengths(traced: Any, reference: Any, sig: Signature, what: str, fmt: str, atol: float = 1e-4,
                  accepted: dict[tuple[str, int], list[int | None] | None] | None = None) -> None:
    """Run `traced` at other sizes of the open non-batch dims than the traced ones, against the eager
    `reference`: a trace that baked a size is refused (typed, naming the dim and the layer), not shipped.
    Sizes the eager model itself cannot run at (shorter than a valid convolution) are skipped, and so are
    sizes outside the `accepted` ranges of an exported program (it refuses those with a guard)."""
    axes = open_axes(sig)
    if not axes:
        return
    for size in CHECK_LENGTHS:
        if accepted and not all(_within(size, accepted.get(k)) for k in axes):
            continue
        verdict = _at_size(traced, reference, sig, size, atol)
        if isinstance(verdict, BaseException):
            raise UnsupportedConversionError(guarded(fmt, what, axes, size, verdict)) from verdict
        if verdict == "wrong":
            blamed = find_fixing_layers(reference, sig)
            key = next((k for k in axes if k in blamed), axes[0])
            raise UnsupportedConversionError(refusal(fmt, what, key[0], key[1], blamed.get(key), size))


def _at_size(traced: Any, reference: Any, sig: Signature, size: int, atol: float) -> str | BaseException:
    """`traced` against the eager `reference` with every open non-batch dim at `size`: "same", "skip" (the model
    itself does not run there), "wrong" (other results, or a baked size failing in a kernel) or the guard's error."""
    import torch

    feed = inputs_at(sig, 2, size, seed=size)
    try:
        with torch.no_grad():
            want = reference(*feed)
    except (RuntimeError, ValueError, IndexError):
        return "skip"
    try:
        with torch.no_grad():
            got = traced(*feed)
    except (RuntimeError, AssertionError) as exc:  # a baked size in a kernel call, or a guard of the program
        return exc if "Guard failed" in str(exc) else "wrong"
    return "same" if all(same_result(g, w, atol) for g, w in zip(got, want)) else "wrong"


def same_result(got: Any, want: Any, atol: float) -> bool:
    """A traced output against the eager Keras one: same shape, within atol; NaN where Keras gives NaN too
    (a masked mean over a row of padding only) is the same result."""
    import torch

    return tuple(got.shape) == tuple(want.shape) and bool(torch.allclose(got, want, atol=atol, rtol=0,
                                                                         equal_nan=True))


def _within(size: int, bounds: list[int | None] | None) -> bool:
    return bounds is not None and size >= (bounds[0] or 1) and (bounds[1] is None or size <= bounds[1])


def batch_fixed_by(seen: dict[tuple[str, int], str]) -> str:
    """For an export that failed on the batch: the layer a `watch` saw make it a constant, and what to do."""
    layer = next((layer for (_, axis), layer in seen.items() if axis == 0), None)
    if layer is None:
        return ""
    return (f"; layer {layer} turns the batch into the traced size (a Python loop over the batch, or the batch read "
            "as a number): written with ops over the whole batch, it exports")


def refusal(fmt: str, what: str, name: str, axis: int, layer: str | None, size: int | None = None) -> str:
    where = f"layer {layer}" if layer else "the traced code"
    at = f" (at size {size} it fails or gives other results than the Keras model)" if size else ""
    keep = KEEP_DYNAMIC
    if fmt == "pt2" and layer and re.search(r"\((LSTM|GRU|Bidirectional)\)", layer):
        keep += ("; an LSTM / GRU with tanh / sigmoid gates and a bias (a GRU with reset_after=True) would run at "
                 "any length in pt2 and torchscript")
    if fmt.startswith("onnx"):  # the torch route (OpenVINO's for a recurrent model): tf2onnx's keeps the length
        keep = ("onnx by its default route (tf2onnx), saved_model; or fix the length when converting "
                "(--input-spec) for this route and OpenVINO")
    return (f"{what} cannot keep dimension {axis} of input '{name}' dynamic: {where} turns it into the "
            f"traced size {example_size(axis)}{at}; {fmt} would run at that size only. Formats that keep it "
            f"dynamic: {keep}")


def guarded(fmt: str, what: str, axes: list[tuple[str, int]], size: int, exc: BaseException) -> str:
    """The refusal of a program that keeps its open dims symbolic but guards them (a parity of a size), so it
    refuses sizes the Keras model runs at."""
    dims = ", ".join(f"dimension {a} of input '{n}'" for n, a in axes)
    return (f"{what} keeps {dims} open only for some sizes: at size {size}, which the Keras model runs at, {fmt} "
            f"fails its guard ({_short(first_line(exc))}). Formats that keep it dynamic: {KEEP_DYNAMIC}; or fix the "
            "size when converting (--input-spec)")


def _short(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def find_fixing_layers(module: Any, sig: Signature) -> dict[tuple[str, int], str]:
    """Which layer fixes each open dimension under torch.export (Dim.AUTO), for naming it in a refusal (none for a
    reference that is no torch module)."""
    import torch

    if not isinstance(module, torch.nn.Module):
        return {}

    with watch(module, sig) as seen, symbolic_sizes():  # the ops as the export writes them (1-D pooling as 2-D)
        try:
            torch.export.export(module, inputs_at(sig, 3), dynamic_shapes=(_dims(sig, auto=True),), strict=False)
        except (RuntimeError, TypeError, ValueError):
            pass
    return dict(seen)


def _dims(sig: Signature, auto: bool, smallest: int = 1, bounds: Bounds | None = None) -> tuple[Any, ...]:
    """dynamic_shapes for forward(*args): one entry per input, a {axis: Dim} for its open dims (open non-batch dims
    from `smallest`; up to `bounds`, where given)."""
    from torch.export import Dim

    top_batch, top = bounds if bounds is not None else (None, None)
    out = []
    for spec in sig.inputs:
        d: dict[int, Any] = {}
        for axis, size in enumerate(spec.shape):
            if size is not None:
                continue
            if axis == 0:
                d[axis] = Dim("batch", min=1, max=top_batch)
            else:
                name = ident(f"{spec.name}_{axis}")
                d[axis] = Dim.AUTO(min=smallest, max=top) if auto else Dim(name, min=smallest, max=top)
        out.append(d or None)
    return tuple(out)


def ident(name: str) -> str:
    text = re.sub(r"\W", "_", name)
    return text if text[:1].isalpha() or text[:1] == "_" else f"d_{text}"
