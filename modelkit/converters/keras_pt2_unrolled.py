"""Route 'unrolled' of keras -> pt2: torch.export with Keras' recurrent loop replaced by modelkit's.

Keras' generic recurrent loop under torch (every masked LSTM/GRU, every SimpleRNN) builds its output
list by iterating over the batch (`list(output)` in keras.src.backend.torch.rnn), so torch.export fixes
the batch size and the first route (keras_pt2) refuses the model. This route exports the same model
(same weights) with modelkit's unrolled loop (modelkit.converters._unroll: per step the cell's own ops,
masks as `where`), which never iterates over the batch: the batch stays dynamic. LSTM and GRU layers
without a mask keep Keras' fused torch kernels. The loop runs over the traced number of steps, so an
open time axis is fixed by the layer and refused like any dimension torch fixes (modelkit.convert.
_torch_dims, naming the layer); a model that fixes its length converts. Verified against the original
Keras model like any other hop; the manifest records the route and the layers and steps unrolled.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..formats import Format
from .keras_pt2 import TOLERANCE
from .registry import converter

ROUTE = "unrolled"


@converter(Format.KERAS, Format.TORCH_EXPORT, backend="torch", tolerance=TOLERANCE)
def keras_to_pt2_unrolled(src: Path, dest: Path, trust_unsafe_code: bool = False) -> dict[str, Any]:
    import torch

    from ..errors import RouteNotApplicableError
    from . import _torch_dims
    from ._torch_constants import constants_as_parameters
    from ._torch_module import SIGNATURE_FILE, example_inputs, load_wrapped, signature_json, versions
    from ._unroll import recurrent_layers, unrolled_rnn

    module, sig = load_wrapped(src, trust_unsafe_code)
    layers = recurrent_layers(module.model)
    if not layers:
        raise RouteNotApplicableError(f"{Path(src).name}: the '{ROUTE}' route replaces Keras' recurrent loop, "
                                         "and the model has no recurrent layer")
    with unrolled_rnn() as seen:
        program, accepted = _torch_dims.export(module, sig, example_inputs(sig), Path(src).name)
    constants_as_parameters(program)  # each weight stored once, not again as a lifted constant
    torch.export.save(program, str(dest), extra_files={SIGNATURE_FILE: signature_json(sig)})
    return {"versions": versions(), "dim_ranges": {f"{n}:{a}": r for (n, a), r in accepted.items()},
            "route": {"unrolled": {"layers": [layer.name for layer in layers], "steps": sorted(set(seen.steps))}}}
