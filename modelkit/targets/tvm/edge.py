"""Edge onnx -> tvm: compile an ONNX model into a TVM shared library (`.tvm.so`) for a named target.

`modelkit convert m.keras --to tvm` plans keras -> onnx -> tvm and verifies this hop against the ONNX
source like every other; `modelkit compile` adds targets, batch and tuning options. The work lives in
modelkit.targets.tvm.compile; TVM is imported only when the edge runs. The converters' route table names this
edge by its path (converters/registry.py), so the converters never import the TVM compiler: the package that
owns the compiler owns its edge and its tolerance.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...converters.registry import Tolerance, converter
from ...formats import Format

# TVM fuses and reorders float reductions (and LLVM may contract multiply-adds into FMAs) that
# onnxruntime evaluates in another order: ~1e-6 on small nets; 1e-4 leaves room for deep ones while any
# real mistake (wrong layout, wrong op) is off by > 1e-2.
TOLERANCE = Tolerance(atol=1e-4, min_cosine=0.9999)
# a Loop no pass here unrolls (a while loop whose condition the body computes: ops.fori_loop under TensorFlow, nc55);
# torch.onnx traces the same model's loop into its steps
LOOP_WHY = ("tf2onnx wrote the model's loop as an ONNX Loop whose number of steps the graph computes, which TVM's "
            "importer does not take")
# TVM's importer or legalization failing on a tf2onnx graph (nc66: a graph network's segment_sum, which tf2onnx
# writes with Unique and a ScatterND of indices of unknown shape, "'NoneType' object is not subscriptable");
# torch.onnx writes the same layers with other ops (a ScatterElements of known shape)
GRAPH_WHY = "TVM's ONNX importer could not take the graph tf2onnx wrote"


@converter(Format.ONNX, Format.TVM, tolerance=TOLERANCE,
           options={"target": "server-cpu", "batch": None, "trials": None, "budget": None, "cache_dir": None,
                    "rpc": None, "device_key": None, "input_spec": None})
def onnx_to_tvm(src: Path, dest: Path, target: Any = "server-cpu", batch: int | None = None,
                trials: int | None = None, budget: str | float | None = None,
                cache_dir: str | None = None, rpc: str | None = None, device_key: str | None = None,
                input_spec: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """target: a name from `modelkit targets` or a TVM target dict; batch: fix the batch (default dynamic
    where the target allows it); trials / budget: MetaSchedule tuning (fixes the batch, default 1);
    rpc ('HOST:PORT' of a TVM RPC tracker) / device_key: measure the candidates on that device; input_spec
    ([{"name", "shape"}]): open dimensions of an ONNX source fixed first (fix_dims.py)."""
    from ...converters.routes import made_by_tf2onnx_from_keras
    from ...errors import ConversionError, SourceRouteError
    from ...safety import check_onnx_external_data
    from .compile import compile_onnx

    check_onnx_external_data(src)  # before onnx.load / TVM read any external-data file
    try:
        return compile_onnx(src, dest, target=target, batch=batch, trials=trials, budget=budget,
                            cache_dir=cache_dir, rpc=rpc, device_key=device_key, input_spec=input_spec)
    except ConversionError as exc:
        why = {"loop": LOOP_WHY, "graph": GRAPH_WHY}.get(getattr(exc, "another_onnx", ""), "")  # set by compile.py
        if why and made_by_tf2onnx_from_keras(src):
            raise SourceRouteError(f"{exc}; {why}: convert again with --route torch --force (route='torch', "
                                   "force=True in Python): the ONNX on the way is then exported through torch.onnx",
                                   {"route": "torch", "why": why}) from exc
        raise
