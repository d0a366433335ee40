"""TFLite / LiteRT engine: ai-edge-litert's Interpreter (tflite-runtime is dead on numpy 2).

Inputs are bound by name. The interpreter orders tensors its own way (alphabetically for converted
signatures) and names them 'serving_default_image:0'; the model's SignatureDef maps the clean Keras
names to tensor indices, so that map is used, and the order follows the manifest's signature.
A model without a SignatureDef falls back to tensor names with the prefix and ':N' suffix stripped.
Inputs are validated by Signature.bind before they reach the interpreter (a bad shape can crash
TFLite); tensors are resized and re-allocated only when the batch (or another dynamic dim) changes.
Sizes of dynamic non-batch dimensions the model cannot run at (shorter than a valid convolution) raise
ShapeError, and the next call resizes afresh.
The interpreter trusts the flatbuffer's content (a bad index crashes the process), so a file is validated
and, the first time this machine sees its sha256, opened in a sandboxed child before this process opens
exactly the bytes that were checked (modelkit.safety.tflite).
"""
from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .. import manifest as _manifest
from .._quiet import engine_chatter_swallowed
from .._require import require
from ..errors import LoadError, ShapeError, first_line
from ..formats import Format
from ..spec import Signature, TensorSpec, tf_names_back
from .base import Model, order_outputs, parse_device
from .memory import guard_load

SIGNATURE_KEY = "serving_default"


class LiteRTModel(Model):
    format = Format.TFLITE
    engine = "ai-edge-litert"

    def __init__(self, path: Path, interpreter: Any, without_xnnpack: Any = None):
        # makes the interpreter again without the default XNNPACK delegate, for a model XNNPACK fails to prepare
        # at some shape (an int8 unrolled LSTM: "failed to create XNNPACK runtime"); the builtin kernels run it
        self._without_xnnpack = without_xnnpack
        inputs, outputs = _named_details(interpreter, path)
        m = _manifest.read(path)
        # inputs the converter named for TF ('user-id' -> 'user_id'): the model's own names, from the manifest
        back = tf_names_back(inputs, m.sig.input_names if m else None)
        inputs = {back.get(n, n): d for n, d in inputs.items()}
        in_order = order_outputs(list(inputs), m.sig.input_names if m else None)
        out_order = order_outputs(list(outputs), m.sig.output_names if m else None)
        sig = Signature(tuple(_spec(n, inputs[n]) for n in in_order), tuple(_spec(n, outputs[n]) for n in out_order))
        super().__init__(path, sig)
        self._in_index = {n: int(inputs[n]["index"]) for n in in_order}
        self._out_index = {n: int(outputs[n]["index"]) for n in out_order}
        self._in_items = list(self._in_index.items())  # signature order, as bind returns inputs
        self._out_items = list(self._out_index.items())
        self._shapes: tuple[tuple[int, ...], ...] = ()
        self._one, self._first = len(in_order) == 1, in_order[0] if in_order else ""
        # dynamic non-batch dims (a sequence length): sizes the model cannot run at are the caller's ShapeError
        self._open_dims = any(d is None for s in sig.inputs for d in s.shape[1:])
        self._lock = threading.Lock()  # one interpreter holds one set of tensors: one call at a time
        # The interpreter's C++ calls, past its Python methods (~1 us a call): invoke()'s check for numpy views
        # into the tensors (modelkit never makes one: get_tensor copies) and one wrapper call per tensor. No
        # reference to the C++ object is kept: the Python methods that still run (resize) count its references.
        self._use(interpreter)

    def _use(self, interpreter: Any) -> None:
        self.interpreter, self._shapes = interpreter, ()
        native = getattr(interpreter, "_interpreter", None)
        self._fast = all(callable(getattr(native, n, None)) for n in ("SetTensor", "Invoke", "GetTensor"))

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        it = self.interpreter
        shapes = (inputs[self._first].shape,) if self._one else tuple([inputs[n].shape for n, _ in self._in_items])
        with self._lock:
            try:
                if shapes != self._shapes:
                    self._shapes = ()
                    for (_, index), shape in zip(self._in_items, shapes):
                        # strict: only dims the model declares dynamic may change (bind checked the rest)
                        it.resize_tensor_input(index, list(shape), strict=True)
                    it.allocate_tensors()
                    self._shapes = shapes
                if not self._fast:
                    for n, index in self._in_items:
                        it.set_tensor(index, inputs[n])
                    it.invoke()
                    return {n: it.get_tensor(i) for n, i in self._out_items}  # get_tensor copies
                native = it._interpreter  # noqa: SLF001 - see __init__
                for n, index in self._in_items:
                    native.SetTensor(index, inputs[n])
                native.Invoke()
                return {n: native.GetTensor(i, 0) for n, i in self._out_items}
            except (RuntimeError, ValueError) as exc:  # inputs were validated against the signature
                # this frame outlives the call in the exception's traceback (a server keeps the error): its
                # reference to the C++ object would make every later resize fail ("at least 1 reference")
                native = None  # noqa: F841
                text = first_line(exc)
                if self._without_xnnpack is not None and "XNNPACK" in text:
                    with engine_chatter_swallowed():
                        self._use(self._without_xnnpack())
                    self._without_xnnpack = None
                elif not self._shapes and self._open_dims:
                    # sizing the tensors for new sizes of dynamic dims failed: these sizes do not fit the
                    # model (a valid convolution longer than the sequence); the next call resizes afresh
                    given = ", ".join(f"'{n}' {s}" for (n, _), s in zip(self._in_items, shapes))
                    raise ShapeError(f"{self.path.name} cannot run at input shapes {given}: ai-edge-litert "
                                     f"could not size the model's tensors for them ({text})") from exc
                else:
                    raise LoadError(f"{self.path}: ai-edge-litert failed running this model: {text}") from exc
        return self._run(inputs)  # again, on the builtin kernels


def _named_details(it: Any, path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """{clean name: tensor details} for inputs and outputs, from the SignatureDef when there is one."""
    plain_in = {int(d["index"]): d for d in it.get_input_details()}
    plain_out = {int(d["index"]): d for d in it.get_output_details()}
    sigs = it.get_signature_list()
    if sigs:
        key = SIGNATURE_KEY if SIGNATURE_KEY in sigs else next(iter(sigs))
        if len(sigs) > 1 and SIGNATURE_KEY not in sigs:
            raise LoadError(f"{path}: {len(sigs)} signatures ({', '.join(sigs)}) and none is '{SIGNATURE_KEY}'")
        runner = it.get_signature_runner(key)
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        # the engine drives the main subgraph's tensors directly (resize only when the batch changes)
        if {int(d["index"]) for d in inputs.values()} != set(plain_in):
            raise LoadError(f"{path}: signature '{key}' is not the model's main subgraph; not supported")
        return dict(inputs), dict(outputs)
    m = _manifest.read(path)
    inputs = {_clean(d["name"]): d for d in plain_in.values()}
    out_list = list(plain_out.values())
    if m is not None and len(m.sig.outputs) == len(out_list):
        names = m.sig.output_names  # no SignatureDef: outputs keep the order the converter wrote
    else:
        names = [_clean(d["name"]) for d in out_list]
    return inputs, dict(zip(names, out_list))


def _clean(name: str) -> str:
    """'serving_default_image:0' -> 'image'."""
    name = re.sub(r":\d+$", "", name)
    return re.sub(rf"^{SIGNATURE_KEY}_", "", name)


def _spec(name: str, d: dict[str, Any]) -> TensorSpec:
    shape = d.get("shape_signature")
    if shape is None or len(shape) == 0 and len(d["shape"]):
        shape = d["shape"]
    if any(int(x) < -1 for x in shape):
        raise LoadError(f"tensor '{name}' has a corrupt shape {list(shape)}")
    return TensorSpec(name, tuple(int(x) for x in shape), np.dtype(d["dtype"]).name)


@guard_load("ai-edge-litert")
def load(path: Path, device: str = "cpu", threads: int | None = None, **options: Any) -> LiteRTModel:
    """Load a .tflite file with ai-edge-litert; threads -> the interpreter's num_threads."""
    parse_device(device, ("cpu",))
    lite = require("ai_edge_litert.interpreter", "run-tflite", "ai-edge-litert")
    p = Path(path)
    if not p.is_file():
        raise LoadError(f"no such TFLite file: {p}")
    from ..safety.tflite import open_bytes

    data = open_bytes(p)  # validated, and probed in a sandboxed child unless this machine knows its sha256
    try:
        # the runtime announces its delegate on fd 2 ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."),
        # once per load; a failure still reaches the user as the typed error below
        n = int(threads) if threads else None

        def without_xnnpack() -> Any:
            plain = lite.Interpreter(model_content=data, num_threads=n,
                                     experimental_op_resolver_type=lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            _allocate(plain)
            return plain

        with engine_chatter_swallowed():
            interpreter = lite.Interpreter(model_content=data, num_threads=n)
            try:
                _allocate(interpreter)
            except RuntimeError as exc:
                if "XNNPACK" not in str(exc):
                    raise
                return LiteRTModel(p, without_xnnpack())
        return LiteRTModel(p, interpreter, without_xnnpack)
    except LoadError:
        raise
    except (ValueError, RuntimeError, KeyError, IndexError) as exc:  # a corrupt flatbuffer (names that are not
        # UTF-8, bogus shapes) or an op the runtime lacks
        text = first_line(exc)
        raise LoadError(f"{p}: ai-edge-litert could not load this model: {text}") from exc


def _allocate(interpreter: Any) -> None:
    """Allocate at the written shapes, where they fit: with dynamic non-batch dimensions the written size
    is 1, which a model may not run at (a valid convolution needs a longer sequence); its tensors are then
    allocated at the first call's shapes instead (`_run` resizes before every change of shape)."""
    try:
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError):
        if not any(-1 in list(d.get("shape_signature", []))[1:] for d in interpreter.get_input_details()):
            raise
