"""The Keras model as a plain torch.nn.Module, for the TorchScript and .pt2 edges.

Under the torch backend every Keras layer is a torch.nn.Module, so the model can be traced or
exported once it is wrapped in a module that takes positional tensors (in Signature input order)
and returns a tuple (in Signature output order). Torch artifacts carry no tensor names, so the
edges store the Signature inside the artifact as SIGNATURE_FILE; the runtime reads it from there.
Runs only in a process whose Keras backend is torch (the edges run in such a child process). Open
dimensions other than the batch (a sequence length) are handled in modelkit.converters._torch_dims.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConversionError, first_line
from ..spec import Signature

SIGNATURE_FILE = "modelkit_signature.json"  # the extra file inside .torchscript.pt / .pt2 artifacts
# Trace / export with a batch that is neither 1 nor 7 (the verification batches), so verification
# proves that the batch dimension generalises instead of replaying the example.
EXAMPLE_BATCH = 3


def load_wrapped(src: Path, trust_unsafe_code: bool = False) -> tuple[Any, Signature]:
    """Load `src` under the torch backend; return (module in eval mode without grads, Signature). torch's
    fake-tensor logger is quieted for this (child) process: it logs a traceback to stderr for every kernel that fails
    while an export traces (nc118: 360 lines for a MelSpectrogram traced too short), where the export's own
    exception carries the reason, which the edge turns into one typed line."""
    import logging

    from ..keras_io.files import keras_signature, load_keras

    logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.CRITICAL)
    model = load_keras(src, trust_unsafe_code=trust_unsafe_code, backend="torch")
    sig = keras_signature(model)
    module = _wrap(model, sig)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    from ._torch_examples import fit_examples

    fit_examples(module, sig)  # the sizes its open dims are traced at
    return module, sig


def _wrap(model: Any, sig: Signature) -> Any:
    import keras
    import torch

    dict_inputs = isinstance(getattr(model, "_inputs_struct", None), dict)
    names = sig.input_names

    class KerasModule(torch.nn.Module):
        """forward(*inputs in Signature order) -> tuple of outputs in Signature order."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> tuple[Any, ...]:
            if dict_inputs:
                feed: Any = dict(zip(names, args))
            else:
                feed = list(args) if len(args) > 1 else args[0]
            outputs = keras.tree.flatten(self.model(feed, training=False))
            return tuple(_as_declared(t, spec.dtype) for t, spec in zip(outputs, sig.outputs))

    return KerasModule()


def _as_declared(tensor: Any, dtype: str) -> Any:
    """`tensor` in the dtype the Keras model declares for it: Keras' symbolic ops say int32 for top_k / argsort
    indices where torch computes int64 (nc141: a .pt2, .torchscript.pt and .pte answered int64 under a signature
    saying int32, as the ONNX and TFLite files answer); one cast in the program, where they differ."""
    import torch

    want = getattr(torch, dtype, None)
    if isinstance(want, torch.dtype) and isinstance(tensor, torch.Tensor) and tensor.dtype != want:
        return tensor.to(want)
    return tensor


def example_inputs(sig: Signature, batch: int = EXAMPLE_BATCH, seed: int = 0) -> tuple[Any, ...]:
    """Seeded example tensors: uniform [0, 1) floats, zero ints (a valid index for any Embedding); open
    non-batch dims at their example sizes (modelkit.converters._torch_examples.example_size)."""
    from ._torch_dims import inputs_at

    return inputs_at(sig, batch, seed=seed)


def check_batches(module: Any, reference: Any, sig: Signature, what: str, batches: tuple[int, ...] = (1, 5),
                  atol: float = 1e-4) -> None:
    """Run `module` at batch sizes other than the example's and compare with the eager `reference`.

    A trace that baked the example batch into a Reshape fails here, with a message that says so,
    rather than later as an unexplained parity failure.
    """
    import torch

    from ._torch_dims import batch_fixed_by, find_fixing_layers, same_result

    for batch in batches:
        feed = example_inputs(sig, batch, seed=batch)
        try:
            with torch.no_grad():
                got, want = module(*feed), reference(*feed)
        except RuntimeError as exc:
            blamed = batch_fixed_by(find_fixing_layers(reference, sig))
            raise ConversionError(f"{what} does not run at batch {batch} (traced at {EXAMPLE_BATCH}): the "
                                  f"batch size was baked into the graph{blamed}. Torch said: "
                                  f"{first_line(exc)}") from exc
        for name, g, w in zip(sig.output_names, got, want):
            if not same_result(g, w, atol):
                blamed = batch_fixed_by(find_fixing_layers(reference, sig))
                raise ConversionError(f"{what} gives wrong results for output '{name}' at batch {batch} "
                                      f"(traced at {EXAMPLE_BATCH}): the batch size or data-dependent "
                                      f"control flow was baked into the graph{blamed}")


def signature_json(sig: Signature) -> str:
    return json.dumps(sig.to_dict())


def versions() -> dict[str, str]:
    import keras
    import torch

    return {"torch": torch.__version__, "keras": keras.__version__}
