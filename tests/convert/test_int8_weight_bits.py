"""int8 artifacts carry 7-bit weights on both x86 server engines (onnxruntime's reduce_range, NNCF's overflow fix
in every layer): on CPUs without VNNI (AVX2) u8 x s8 products saturate in 16 bits, and an artifact made on a VNNI
machine would otherwise lose accuracy silently where it is deployed. This reads the weights themselves, so it
guards the fix on any CPU (the accuracy failures it prevents show only on an AVX2 one). The 8-bit variants are
what benchmarks/bench_int8_weights.py measures against."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")


def _conv_dense_onnx(path: Path) -> Path:
    """x (N, 1, 6, 6) -> Conv 4x3x3 -> Relu -> Flatten -> MatMul 64x3: one Convolution and one MatMul."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    d = rng.standard_normal((64, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("MatMul", ["f", "d"], ["y"])]
    graph = helper.make_graph(nodes, "conv_dense",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(d, "d")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def _calibration() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(4).random((8, 1, 6, 6), dtype=np.float32)}


def _bits(seven: bool) -> dict[str, bool]:
    """modelkit's default (what it ships), or 8-bit weights."""
    return {} if seven else {"seven_bit_weights": False}


@pytest.mark.parametrize("seven", [True, False], ids=["modelkit-7-bit", "8-bit"])
def test_onnx_int8_weights_use_seven_bits(tmp_path, seven):
    import onnx
    from onnx import numpy_helper

    from modelkit.converters.quantize import quantize_onnx

    src = _conv_dense_onnx(tmp_path / "m.onnx")
    quantize_onnx(src, tmp_path / "m.int8.onnx", "int8", _calibration(), **_bits(seven))
    g = onnx.load(str(tmp_path / "m.int8.onnx")).graph
    weights = [numpy_helper.to_array(t) for t in g.initializer  # not the zero points (vectors)
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
    assert len(weights) == 2  # the Conv's and the MatMul's
    peaks = sorted(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert peaks == ([64, 64] if seven else [127, 127])


@pytest.mark.parametrize("seven", [True, False], ids=["modelkit-7-bit", "8-bit"])
def test_openvino_int8_weights_use_seven_bits(tmp_path, seven):
    pytest.importorskip("nncf")
    import openvino as ov

    from modelkit.converters.onnx_openvino import nncf_quantized

    src = _conv_dense_onnx(tmp_path / "m.onnx")
    model = nncf_quantized(ov.Core().read_model(str(src)), _calibration(), src.name, **_bits(seven))
    weights = [op.get_data() for op in model.get_ops()
               if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    assert len(weights) == 2
    peaks = sorted(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert max(peaks) <= 64 if seven else peaks == [127, 127]
