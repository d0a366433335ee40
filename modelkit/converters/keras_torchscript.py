"""Edge keras -> torchscript: torch.jit.trace of the Keras model under the torch backend.

jit.script cannot compile Keras' Python, so the model is traced: once, at an example batch of 3 (and
open non-batch dims at example sizes 8, 10, ...), in eval mode without gradients, then checked at other
batch sizes (a trace that baked the batch fails here with a clear message) and at other sizes of the
open dims: a trace that baked a sequence length (a recurrent layer's loop is unrolled at the traced
length) is refused with UnsupportedConversionError naming the dimension and the layer. Runs in a child
process with KERAS_BACKEND=torch, so a .keras trained under TensorFlow or JAX converts too. The
Signature is stored inside the artifact (`extra/modelkit_signature.json`), so the runtime needs neither
Keras nor the manifest. The trace pins every tensor to the CPU it was traced on and lets cuDNN use TF32;
the saved graph follows its input's device instead, exactly (runtime.torchscript.make_portable), so the
file runs on a GPU as it is.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

from ..errors import ConversionError, ModelkitError, first_line
from ..formats import Format
from .registry import Tolerance, converter

# The traced graph calls the same torch kernels as eager Keras-on-torch: measured max abs error is 0.0
# on the digits CNN; 1e-5 only leaves room for kernel selection differing between batch sizes.
TOLERANCE = Tolerance(atol=1e-5, min_cosine=0.99999)


@converter(Format.KERAS, Format.TORCHSCRIPT, backend="torch", tolerance=TOLERANCE)
def keras_to_torchscript(src: Path, dest: Path, trust_unsafe_code: bool = False) -> dict[str, Any]:
    import torch

    from ..runtime.torchscript import make_portable
    from ._torch_dims import check_lengths, open_axes
    from ._torch_examples import unfit_hint
    from ._torch_export_ops import traced_alike, traced_same_padding, traced_vmap_refused
    from ._torch_module import SIGNATURE_FILE, check_batches, example_inputs, load_wrapped, signature_json, versions
    from ._torch_rnn import fused_recurrent

    module, sig = load_wrapped(src, trust_unsafe_code)
    padding = traced_same_padding() if open_axes(sig) else contextlib.nullcontext()  # a strided "same" padding
    with torch.no_grad(), warnings.catch_warnings(), fused_recurrent(), padding, traced_alike(), \
            traced_vmap_refused():  # LSTM / GRU: one op, any length; a warp, a cond, a search as torch.export has
        # Keras' input checks turn sizes into Python values while tracing; check_batches below is the
        # real test that nothing shape-dependent was baked in
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        example = example_inputs(sig)
        try:
            traced = torch.jit.trace(module, example, check_trace=False)
        except ModelkitError:  # a refusal made while tracing (traced_vmap_refused): already typed
            raise
        except Exception as exc:  # noqa: BLE001 - the user's model failing at the example sizes, whatever it raises
            shapes = ", ".join(f"'{s.name}' {tuple(x.shape)}" for s, x in zip(sig.inputs, example))
            raise ConversionError(f"torch.jit.trace could not trace {src.name} at {shapes}: {first_line(exc)}"
                                  f"{unfit_hint(sig)}") from exc
    make_portable(traced)
    check_batches(traced, module, sig, "the TorchScript trace")
    check_lengths(traced, module, sig, "the TorchScript trace", "torchscript")
    try:
        torch.jit.save(traced, str(dest), _extra_files={SIGNATURE_FILE: signature_json(sig)})
    except RuntimeError as exc:  # a Python call the trace recorded and TorchScript cannot store
        raise ConversionError(f"torch.jit.save could not store the trace of {src.name}: {first_line(exc)}; the "
                              "formats exported by torch.export (pt2, executorch) take Python calls") from exc
    return {"versions": versions()}
