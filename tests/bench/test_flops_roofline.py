"""FLOPs counted on small ONNX graphs with known answers, and the peak estimate from cpuinfo text."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelkit.bench.flops import count_flops
from modelkit.bench.roofline import achieved, flops_per_cycle, machine_peak, parse_cpuinfo
from tests.helpers import make_tiny_onnx


def _saved(graph, path: Path) -> Path:
    """The graph as a checked opset-17 model file at `path`."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _conv_net(path: Path) -> Path:
    """x (N, 8, 5, 5) -> depthwise 3x3 -> 1x1 conv 8->16 with bias -> global avg pool -> flatten -> Gemm 16->10."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "dw"], ["a"], group=8, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "pw", "pb"], ["b"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["b"], ["c"]),
        helper.make_node("GlobalAveragePool", ["c"], ["d"]),
        helper.make_node("Flatten", ["d"], ["e"]),
        helper.make_node("Gemm", ["e", "fw", "fb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                              [init("dw", 8, 1, 3, 3), init("pw", 16, 8, 1, 1), init("pb", 16),
                               init("fw", 10, 16), init("fb", 10)])
    return _saved(graph, path)


@pytest.mark.parametrize("batch", [1, 7])
def test_conv_depthwise_gemm_flops_are_exact(tmp_path, batch) -> None:
    f = count_flops(_conv_net(tmp_path / "c.onnx"), batch)
    n = batch
    assert f["by_op"]["Conv"] == 2 * n * 8 * 25 * 1 * 9 + (2 * n * 16 * 25 * 8 + n * 16 * 25)  # depthwise + 1x1
    assert f["by_op"]["Gemm"] == 2 * n * 10 * 16 + n * 10
    assert f["by_op"]["Relu"] == n * 16 * 25
    assert f["by_op"]["GlobalAveragePool"] == n * 16 * 25
    assert "Flatten" not in f["by_op"] and f["unknown"] == []
    assert f["total"] == n * (3600 + 6800 + 330 + 400 + 400)


def test_matmul_flops_scale_with_batch(tmp_path) -> None:
    path = make_tiny_onnx(tmp_path / "t.onnx")  # MatMul (b,4)x(4,3), Add, Softmax
    one, many = count_flops(path, 1), count_flops(path, 32)
    assert one["by_op"] == {"MatMul": 24, "Add": 3, "Softmax": 3}
    assert many["total"] == 32 * one["total"] == 960


CPUINFO = """processor\t: 0
model name\t: Test CPU
flags\t\t: fpu sse sse2 avx fma avx2 avx512f
cpu MHz\t\t: 2000.000
physical id\t: 0
core id\t\t: 0

processor\t: 1
model name\t: Test CPU
flags\t\t: fpu sse sse2 avx fma avx2 avx512f
cpu MHz\t\t: 2500.000
physical id\t: 0
core id\t\t: 0

processor\t: 2
flags\t\t: fpu sse sse2 avx fma avx2 avx512f
cpu MHz\t\t: 2500.000
physical id\t: 0
core id\t\t: 1
"""


def test_cpuinfo_parsing_and_flops_per_cycle() -> None:
    info = parse_cpuinfo(CPUINFO)
    assert info["model"] == "Test CPU" and info["mhz"] == 2500.0
    assert info["logical_cpus"] == 3 and info["physical_cores"] == 2  # two hyperthreads share core 0
    assert flops_per_cycle(info["flags"]) == ("avx512", 64)
    assert flops_per_cycle({"avx", "avx2", "fma"}) == ("avx2+fma", 32)
    assert flops_per_cycle({"avx", "avx2"}) == ("avx", 16)  # AVX2 without FMA
    assert flops_per_cycle({"sse2"}) == ("sse2", 8)
    assert flops_per_cycle(set()) == ("scalar", 2)


def test_machine_peak_follows_the_formula(monkeypatch) -> None:
    monkeypatch.delenv("MODELKIT_PEAK_GFLOPS", raising=False)
    m = machine_peak()
    assert m["peak_gflops"] == pytest.approx(m["physical_cores"] * m["clock_mhz"] / 1e3 * m["flops_per_cycle"])
    assert m["peak_source"] == "estimate" and "FLOPs/cycle" in m["formula"]
    monkeypatch.setenv("MODELKIT_PEAK_GFLOPS", "123.5")
    assert machine_peak()["peak_gflops"] == 123.5


def test_achieved_rate() -> None:
    assert achieved(2_000_000_000, 0.5, 8.0) == (4.0, 0.5)
    assert achieved(None, 0.5, 8.0) == (None, None)


def _loop_net(path: Path, steps: int) -> Path:
    """h (N, 4) -> Loop of `steps` iterations: h = tanh(h @ W) with W (4, 4) from the outer scope -> y (N, 4).
    The body's carried input has no shape, as in tf2onnx's Loop for Keras' GRU / LSTM."""
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["h_in", "w"], ["hw"]),
         helper.make_node("Tanh", ["hw"], ["h_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)], "loopnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array(steps, np.int64), "trips"),
         numpy_helper.from_array(np.array(True), "cond"),
         numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")])
    return _saved(graph, path)


@pytest.mark.parametrize("batch", [1, 3])
def test_a_loop_counts_its_body_once_per_step(tmp_path, batch) -> None:
    # was: the Loop counted as its output's elements (4 * batch), its MatMuls left out; a tf2onnx GRU classifier's
    # GFLOP/s in `modelkit bench` was 8x too low
    got = count_flops(_loop_net(tmp_path / "loop.onnx", steps=32), batch)
    assert got["by_op"]["MatMul"] == 32 * 2 * batch * 4 * 4
    assert got["by_op"]["Tanh"] == 32 * batch * 4
    assert "Loop" not in got["unknown"] and "MatMul" not in got["unknown"]
