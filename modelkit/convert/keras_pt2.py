"""Edge keras -> pt2: torch.export of the Keras model under the torch backend, batch dimension dynamic.

The exported program is saved with torch.export.save; the Signature travels inside it as an extra
file, so the runtime needs neither Keras nor the manifest. Runs in a child process with
KERAS_BACKEND=torch, so a .keras trained under TensorFlow or JAX converts too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConversionError
from ..formats import Format
from .registry import Tolerance, converter

# The exported graph runs the same aten kernels as eager Keras-on-torch (decomposed): measured max abs
# error <= 3e-8 on small nets, 0.0 on the digits CNN; 1e-5 catches any real mistake.
TOLERANCE = Tolerance(atol=1e-5, min_cosine=0.99999)


@converter(Format.KERAS, Format.TORCH_EXPORT, backend="torch", tolerance=TOLERANCE)
def keras_to_pt2(src: Path, dest: Path, trust_unsafe_code: bool = False) -> dict[str, Any]:
    import torch

    from ._torch_module import SIGNATURE_FILE, check_batches, example_inputs, load_wrapped, signature_json, versions

    module, sig = load_wrapped(src, trust_unsafe_code)
    batch = torch.export.Dim("batch", min=1)
    dims = tuple({0: batch} if s.shape and s.shape[0] is None else None for s in sig.inputs)
    try:
        # forward(*args): the dynamic shapes of the varargs tuple are one nested tuple
        program = torch.export.export(module, example_inputs(sig), dynamic_shapes=(dims,), strict=False)
    except (RuntimeError, TypeError, ValueError) as exc:  # torch's UserError is a RuntimeError
        text = str(exc).strip()
        raise ConversionError(f"torch.export could not export {Path(src).name} with a dynamic batch: "
                              f"{text.splitlines()[0] if text else type(exc).__name__}") from exc
    check_batches(program.module(), module, sig, "the exported program")
    torch.export.save(program, str(dest), extra_files={SIGNATURE_FILE: signature_json(sig)})
    return {"versions": versions()}
