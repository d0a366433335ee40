"""Running out of memory, recognised in one place for every engine.

Each engine says it differently: numpy and Python raise MemoryError, TensorFlow ResourceExhaustedError
("OOM when allocating tensor"), TVM `InternalError: std::bad_alloc`, onnxruntime `Fail: ... Failed to
allocate memory`, torch `RuntimeError: ... can't allocate memory`, Keras a RuntimeError whose cause is a
MemoryError, and LiteRT's XNNPACK only "failed to prepare". Model.predict and every engine's load turn
them into ResourceError, saying how much memory the work needed and what this process may use.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import numpy as np

from ..errors import InputError, LoadError, ResourceError, UnsafeModelError, chained
from ..safety.limits import proc_kib, size
from ..spec import Signature

_TEXT = re.compile(r"bad[_ ]alloc|bad allocation|out of memory|cannot allocate memory|can't allocate memory|"
                   r"failed to allocate memory|unable to allocate|arena alloc failed|memory allocation failed|"
                   r"resource[ _]?exhausted|\bENOMEM\b", re.I)
_OOM = re.compile(r"\bOOM\b")  # TensorFlow: "OOM when allocating tensor"
_TYPES = frozenset({"ResourceExhaustedError", "OutOfMemoryError"})  # tf.errors, torch(.cuda): by name, no import

F = TypeVar("F", bound=Callable[..., Any])
# std::bad_alloc on inputs and outputs of at most SMALL_NEED, while FREE_PROBE can still be mapped, is seldom memory:
# TVM throws it for a buffer of a negative extent (a Cropping1D((1, 1)) at length 1, nc76)
SMALL_NEED = 1 << 20
FREE_PROBE = 4 << 30


def oom_cause(exc: BaseException) -> BaseException | None:
    """The exception in exc's chain (itself, its __cause__ and __context__) that says memory ran out."""
    found = None
    for e in chained(exc):  # the innermost match wins: the engine's own words, not a wrapper's
        text = str(e)
        if (isinstance(e, MemoryError) or any(c.__name__ in _TYPES for c in type(e).__mro__)
                or _TEXT.search(text) or _OOM.search(text)):
            found = e
    return found


def predict_error(path: Path, engine: str, signature: Signature, inputs: Any,
                  exc: Exception) -> ResourceError | None:
    """A ResourceError for an exception raised while predicting, or None when it was not memory.

    An engine failure without a reason (a LoadError: "failed running this model") counts as memory when
    this process cannot even allocate the inputs and outputs again right now (LiteRT's XNNPACK says only
    "failed to prepare" when its buffers cannot be allocated)."""
    if isinstance(exc, (ResourceError, InputError, UnsafeModelError)):
        return None
    cause = oom_cause(exc)
    if cause is None:
        need = _nbytes(inputs) + (_outputs_bytes(signature, inputs) or 0)
        if not (isinstance(exc, LoadError) and need and not _can_allocate(need)):
            return None
    return _running_out(path, engine, signature, inputs, _said(cause or exc.__cause__ or exc))


def check_headroom(model: Any, inputs: dict[str, np.ndarray], copies: float = 2.5, margin: int = 16 << 20) -> None:
    """Raise ResourceError before the engine runs when this process cannot map `copies` times the inputs
    and outputs, plus margin. For engines that kill the process when an allocation fails instead of
    raising: TensorFlow's kernels throw std::bad_alloc past its C API (SIGABRT) or write to a null buffer
    (SIGSEGV). Measured under RLIMIT_AS, TensorFlow needs 2.2x the inputs and outputs for a dense layer;
    a deep model's activations can need more, and then TensorFlow still aborts."""
    need = int(copies * (_nbytes(inputs) + (_outputs_bytes(model.signature, inputs) or 0))) + margin
    if not _can_allocate(need):
        raise _running_out(model.path, model.engine, model.signature, inputs,
                           f"was not called: {size(need)} could not be mapped for it, and it aborts the "
                           "process when an allocation fails")


def _running_out(path: Path, engine: str, signature: Signature, inputs: Any, said: str) -> ResourceError:
    inputs_bytes = _nbytes(inputs)
    outputs_bytes = _outputs_bytes(signature, inputs)
    if not inputs_bytes:  # Python lists that ran out while becoming arrays
        need = " on inputs that are not numpy arrays"
    else:
        outs = (f" and the outputs need about {size(outputs_bytes)}" if outputs_bytes
                else " (the outputs' size is not known in advance)")
        need = (f": the inputs take {size(inputs_bytes)}{outs}, so it needs at least "
                f"{size(inputs_bytes + (outputs_bytes or 0))}")
    total = inputs_bytes + (outputs_bytes or 0)
    if re.search(r"bad[_ ]alloc", said, re.I) and 0 < total <= SMALL_NEED and _can_allocate(FREE_PROBE):
        shapes = (", ".join(f"'{k}' {tuple(np.shape(v))}" for k, v in inputs.items()) if isinstance(inputs, Mapping)
                  else str(tuple(np.shape(inputs))))
        return ResourceError(
            f"{path.name}: {engine} could not allocate a buffer running this model on inputs of shape {shapes} "
            f"({size(inputs_bytes)}), though {size(FREE_PROBE)} can be mapped: a size the model computes "
            "from its input shapes is likely negative at these shapes (a crop, a valid convolution or a window longer "
            "than the input), or one tensor inside it is vastly larger than its inputs (attention over a very long "
            f"sequence); try the sizes the model was made for ({engine} {said})")
    return ResourceError(f"{path.name}: {engine} ran out of memory running this model{need}{_limits()}; free "
                         f"memory, use a smaller batch, or give the process more memory ({engine} {said})")


def load_error(path: Path, engine: str, exc: Exception) -> ResourceError | None:
    """A ResourceError for an exception raised while loading, or None when it was not memory."""
    if isinstance(exc, (ResourceError, UnsafeModelError)):  # a refusal stays a refusal
        return None
    cause = oom_cause(exc)
    if cause is None:
        return None
    return ResourceError(f"{path}: {engine} ran out of memory loading this model ({size(_disk_size(path))} on "
                         f"disk){_limits()}; free memory or give the process more memory (a small file that "
                         f"asks for much more may be corrupt) ({engine} {_said(cause)})")


def guard_load(engine: str) -> Callable[[F], F]:
    """Decorates an engine's load(path, ...): running out of memory raises ResourceError."""
    def wrap(load: F) -> F:
        @functools.wraps(load)
        def guarded(path: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return load(path, *args, **kwargs)
            except Exception as exc:
                err = load_error(Path(path), engine, exc)
                if err is None:
                    raise
                raise err from exc
        return guarded  # type: ignore[return-value]
    return wrap


def _nbytes(inputs: Any) -> int:
    values = inputs.values() if isinstance(inputs, Mapping) else [inputs]
    return sum(int(v.nbytes) for v in values if isinstance(v, np.ndarray))


def _outputs_bytes(signature: Signature, inputs: Any) -> int | None:
    """Bytes of the outputs for this batch, when every output dimension is fixed but the batch."""
    if not isinstance(inputs, Mapping):
        inputs = {signature.inputs[0].name: inputs} if len(signature.inputs) == 1 else {}
    batch = None
    for spec in signature.inputs:  # the batch of the first input whose dim 0 is dynamic
        value = inputs.get(spec.name)
        if spec.shape and spec.shape[0] is None and isinstance(value, np.ndarray) and value.ndim:
            batch = value.shape[0]
            break
    if not signature.outputs or batch is None:
        return None
    total = 0
    for spec in signature.outputs:
        dims = [batch if d is None and i == 0 else d for i, d in enumerate(spec.shape)]
        if any(d is None for d in dims):
            return None
        total += int(np.prod(dims, dtype=object)) * np.dtype(spec.dtype).itemsize
    return total


def _can_allocate(nbytes: int) -> bool:
    """Whether this process can map nbytes more right now (np.empty maps pages without touching them)."""
    try:
        probe = np.empty(nbytes, np.uint8)
    except (MemoryError, ValueError):
        return False
    del probe
    return True


def _limits() -> str:
    """What this process may use: its RLIMIT_AS and what it has mapped, else the machine's free memory."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        limited = soft != resource.RLIM_INFINITY
    except (ImportError, OSError, ValueError):  # not a POSIX system
        soft, limited = 0, False
    if limited:
        used = proc_kib("/proc/self/status", "VmSize:")
        return (f"; this process may map {size(soft)} (RLIMIT_AS)"
                + (f" and has {size(used)} mapped" if used is not None else ""))
    free = proc_kib("/proc/meminfo", "MemAvailable:")
    return f"; the machine has {size(free)} available" if free is not None else ""


def _disk_size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _said(exc: BaseException) -> str:
    """The engine's own words: "said: TYPE: the line of its message that mentions memory" (else its first)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    line = next((ln for ln in lines if _TEXT.search(ln) or _OOM.search(ln)), lines[0] if lines else "")
    if len(line) > 300:  # keep the part around the words about memory
        hit = _TEXT.search(line) or _OOM.search(line)
        start = max(0, (hit.start() if hit else 0) - 150)
        line = ("..." if start else "") + line[start:start + 300] + ("..." if start + 300 < len(line) else "")
    return f"said: {type(exc).__name__}: {line}" if line else f"said: {type(exc).__name__}"
