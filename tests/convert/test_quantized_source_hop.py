"""An exact hop from a quantized artifact (int8 onnx -> tvm, as `--to tvm --quantize int8` plans it) compares two
engines running the same quantized graph: one that requantizes in integers (onnxruntime) rounds some values to the
neighbouring step (1/255 on a softmax output; 3.9e-3 measured on a Conv1D-GRU classifier), so the hop checks the
loose bounds `modelkit verify` applies to a quantized artifact, not the edge's atol 1e-4, which failed it; and the
artifact's manifest keeps the source's quantization (it was None: `modelkit verify` of the int8 .tvm.so judged it at
atol 1e-4 and failed)."""
import pytest

import modelkit
from modelkit import manifest as _manifest
from modelkit.converters.quantize import INT8_TOLERANCE

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'modelkit[openvino]')")


def test_an_exact_hop_from_an_int8_source_takes_the_int8_bounds(tiny_onnx, tmp_path):
    sig = modelkit.load(tiny_onnx).signature
    _manifest.write(tiny_onnx, _manifest.Manifest(format="onnx", signature=sig.to_dict(), quantization="int8"))
    (r,) = modelkit.convert(tiny_onnx, "openvino", out_dir=tmp_path / "q")
    assert r.parity["ok"] and r.parity["tolerance"]["atol"] == INT8_TOLERANCE.atol
    assert r.parity["tolerance"]["min_cosine"] == INT8_TOLERANCE.min_cosine
    # and the artifact says it is int8 (the graph it runs is): verify and inspect take its bounds from that
    assert r.quantization == "int8" and _manifest.read(r.path).quantization == "int8"
    # an --atol given is the user's bar, kept as given
    (r,) = modelkit.convert(tiny_onnx, "openvino", out_dir=tmp_path / "a", atol=1e-3)
    assert r.parity["tolerance"]["atol"] == 1e-3


def test_an_exact_source_keeps_the_edge_s_own_atol(tiny_onnx, tmp_path):
    (r,) = modelkit.convert(tiny_onnx, "openvino", out_dir=tmp_path)
    assert r.parity["ok"] and r.parity["tolerance"]["atol"] == 5e-4
    assert _manifest.read(r.path).quantization == "none"
