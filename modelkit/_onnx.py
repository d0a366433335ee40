"""ONNX helpers shared by the ONNX edges and the TVM compiler (a leaf: it imports no modelkit package)."""
from __future__ import annotations

from typing import Any

from .errors import ConversionError


def slim(proto: Any) -> Any:
    """Simplify an ONNX graph with onnxslim; the graph's input and output names must survive."""
    import onnxslim

    before = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
    slimmed = onnxslim.slim(proto)
    after = ([i.name for i in slimmed.graph.input], [o.name for o in slimmed.graph.output])
    if after != before:
        raise ConversionError(f"onnxslim changed the graph's inputs/outputs from {before} to {after}")
    return slimmed


def onnxslim_version() -> str:
    import onnxslim

    return str(getattr(onnxslim, "__version__", "unknown"))


def opset_of(proto: Any) -> int | None:
    """The default-domain opset a model imports (None when it imports none)."""
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def constant_values(graph: Any) -> dict[str, Any]:
    """{name: numpy value} of a graph's initializers and Constant nodes (those with a `value` tensor)."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    values.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    return values
