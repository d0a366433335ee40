"""`modelkit compile MODEL.onnx --input-spec image:?,64,64,3`: an ONNX model's open dimensions fixed for TVM.

TVM's ONNX importer cannot keep some open dimensions (a pixel shuffle's reshape of an image of any size, an
attention's sequence length). A .keras source is fixed on its way to ONNX; an ONNX made elsewhere (torch.onnx with
dynamic axes, a model zoo's file) is fixed here: its graph inputs get the spec's sizes before the importer sees
them, so the simplifier folds the shape arithmetic. A dimension the file fixes stays what it is (a spec that says
another size is refused, typed); `?` keeps a dimension as the file has it (the batch, usually). dtypes are the
file's. compile.py fixes a batch (tuning, `--batch N`) the same way, with the signature's shapes as the spec.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from ...errors import InputNameError, ShapeError


def fix_input_dims(proto: Any, specs: Iterable[Mapping[str, Any]], name: str) -> Any:
    """A copy of `proto` whose inputs named in `specs` ({"name", "shape"} as the manifest records them) have the
    spec's sizes where the spec gives one; typed errors for an unknown input, another rank or a fixed size."""
    import onnx

    inits = {i.name for i in proto.graph.initializer}
    inputs = {vi.name: vi for vi in proto.graph.input if vi.name not in inits}
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    fixed = {vi.name: vi for vi in out.graph.input}
    for spec in specs:
        iname, shape = spec["name"], list(spec["shape"])
        if iname not in inputs:
            raise InputNameError(f"--input-spec names '{iname}', which is not an input of {name}; its inputs: "
                                 f"{', '.join(inputs) or 'none'}")
        dims = fixed[iname].type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ShapeError(f"--input-spec gives '{iname}' {len(shape)} dimensions; in {name} it has {len(dims)}")
        for axis, (d, size) in enumerate(zip(dims, shape)):
            if size is None:
                continue
            if d.HasField("dim_value") and d.dim_value > 0:
                if d.dim_value != size:
                    raise ShapeError(f"--input-spec sets dimension {axis} of '{iname}' to {size}; {name} fixes it "
                                     f"at {d.dim_value}")
                continue
            d.Clear()
            d.dim_value = int(size)
    return out
