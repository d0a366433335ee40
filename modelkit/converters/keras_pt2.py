"""Edge keras -> pt2: torch.export of the Keras model under the torch backend, every open dimension dynamic.

The batch and any other dimension the Keras model leaves open (a sequence length, an image side) are
exported as torch.export Dims (modelkit.converters._torch_dims): a dimension torch can only keep within a
range (a valid convolution needs a longer sequence) keeps that range, recorded in the manifest; one that
torch fixes is refused, naming the dimension, the layer and the formats that keep it open.
The exported program is saved with torch.export.save; the Signature travels inside it as an extra
file, so the runtime needs neither Keras nor the manifest. Runs in a child process with
KERAS_BACKEND=torch, so a .keras trained under TensorFlow or JAX converts too.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

from ..formats import Format
from .registry import Tolerance, converter

# The exported graph runs the same aten kernels as eager Keras-on-torch (decomposed): measured max abs
# error <= 3e-8 on small nets, 0.0 on the digits CNN; 1e-5 catches any real mistake.
TOLERANCE = Tolerance(atol=1e-5, min_cosine=0.99999)


@converter(Format.KERAS, Format.TORCH_EXPORT, backend="torch", tolerance=TOLERANCE)
def keras_to_pt2(src: Path, dest: Path, trust_unsafe_code: bool = False) -> dict[str, Any]:
    import torch

    from . import _torch_dims
    from ._torch_constants import constants_as_parameters
    from ._torch_module import SIGNATURE_FILE, example_inputs, load_wrapped, signature_json, versions
    from ._torch_rnn import scanned_recurrent
    from ._torch_scan import scanned_ops

    module, sig = load_wrapped(src, trust_unsafe_code)
    # LSTM / GRU over any length (a scan, or torch's fused op), masked or not; keras.ops.scan over an open length
    with scanned_recurrent(), scanned_ops():
        program, accepted = _torch_dims.export(module, sig, example_inputs(sig), Path(src).name)
    constants_as_parameters(program)  # each weight stored once, not again as a lifted constant
    with _quiet_serializer():
        torch.export.save(program, str(dest), extra_files={SIGNATURE_FILE: signature_json(sig)})
    # the sizes the program accepts per open dimension ("input:axis" -> [min, max or None]), for the manifest
    return {"versions": versions(), "dim_ranges": {f"{n}:{a}": r for (n, a), r in accepted.items()}}


@contextlib.contextmanager
def _quiet_serializer() -> Iterator[None]:
    """torch.export.save without its warning on a scan that reads no tensor from outside its step ("Unsure how to
    serialize the given empty list ... as a tensor list by default", the right guess: the program loads and runs)."""
    serializer = logging.getLogger("torch._export.serde.serialize")
    level = serializer.level
    serializer.setLevel(logging.ERROR)
    try:
        yield
    finally:
        serializer.setLevel(level)
