"""onnx -> openvino: a graph OpenVINO's ONNX frontend cannot convert fails with one line naming the op and why,
not the first line of OpenVINO's message, which names only the C++ file that raised
("Check 'false' failed at src/frontends/common_translators/src/unconverted_ops_report.cpp:151:")."""
import pytest

from modelkit.converters.onnx_openvino import frontend_reason, onnx_to_openvino
from modelkit.errors import ConversionError

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'modelkit[openvino]')")
onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'modelkit[onnx]')")

# OpenVINO 2025's message for a Keras GRU (torch backend, subclassed model) that tf2onnx wrote as an ONNX Loop
GRU_LOOP = (
    "Check 'false' failed at src/frontends/common_translators/src/unconverted_ops_report.cpp:151:\n"
    "FrontEnd API failed with OpConversionFailure:\nModel wasn't fully converted. Failed operations detailed log:\n"
    "-- Loop-17 with a message:\n[ONNX Frontend] Conversion failed for Loop-17\n"
    "Check '(canonical_inputs.size() >= control_inputs_count)' failed at "
    "src/frontends/onnx/frontend/src/op/loop.cpp:310:\n"
    "While validating ONNX node '<Node(Loop): net/gru_1/while_loop:0>':\n"
    "The provided loop body graph canonical inputs size (10), does not match the sum of loop carried dependencies "
    "and two mandatory inputs (7)\n\nSummary:\n-- Conversion is failed for: Loop-17\n")


def test_the_reason_names_the_failed_op_and_the_node_s_own_reason():
    reason = frontend_reason(RuntimeError(GRU_LOOP))
    assert reason.startswith("Conversion is failed for: Loop-17 (While validating ONNX node")
    assert "net/gru_1/while_loop:0" in reason and "canonical inputs size (10)" in reason
    assert "unconverted_ops_report.cpp" not in reason and "\n" not in reason
    # a message without OpenVINO's summary: its first line that is not a C++ check location
    assert frontend_reason(RuntimeError("Check 'x' failed at a.cpp:1:\nthe real reason")) == "the real reason"
    assert frontend_reason(RuntimeError("")) == "RuntimeError"


def test_an_op_without_a_conversion_rule_is_named_in_the_error(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    src = tmp_path / "frob.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.example", 1)]), src)
    with pytest.raises(ConversionError) as info:
        onnx_to_openvino(src, tmp_path / "frob_openvino")
    assert str(info.value) == ("OpenVINO could not convert frob.onnx: "
                               "No conversion rule found for operations: com.example.Frobnicate")
    assert not (tmp_path / "frob_openvino").exists()


def test_a_tf2onnx_graph_openvino_refuses_gets_the_route_that_converts(tiny_onnx):
    import modelkit
    from modelkit import manifest as _manifest
    from modelkit.converters.onnx_openvino import LOOP_WHY, _torch_route_why

    reason = frontend_reason(RuntimeError(GRU_LOOP))
    assert _torch_route_why(tiny_onnx, reason) == ""  # no manifest: no claim about where the graph came from
    sig = modelkit.load(tiny_onnx).signature.to_dict()
    made = _manifest.Manifest(format="onnx", signature=sig, source={"path": "m.keras", "format": "keras"},
                              extra={"route": {"taken": "tf2onnx", "tried": []}})
    _manifest.write(tiny_onnx, made)
    assert _torch_route_why(tiny_onnx, reason) == LOOP_WHY
    assert _torch_route_why(tiny_onnx, "Conversion is failed for: Transpose-17") == (  # nc46's einsum
        "OpenVINO's ONNX frontend refused the graph tf2onnx wrote")
    made.extra["route"]["taken"] = "torch"
    _manifest.write(tiny_onnx, made)
    assert _torch_route_why(tiny_onnx, reason) == ""  # the torch route's own graph: nothing else to try
