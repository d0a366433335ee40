"""Untuned TVM compiles get default CPU schedules (modelkit/targets/tvm/default_schedule.py): parallel outer
loops, vectorized inner loops, register-tiled reductions; the numbers stay those of onnxruntime."""
import re
from pathlib import Path

import numpy as np
import pytest

import modelkit

pytest.importorskip("tvm")


def _conv_onnx(path: Path, batch: int | str = "batch") -> Path:
    """x (batch, 2, 8, 8) -> Conv 3x3 (8 channels, pad 1) + bias -> Relu -> Flatten -> MatMul -> Softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 2, 3, 3)) * 0.3).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    fc = (rng.standard_normal((8 * 8 * 8, 10)) * 0.05).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Flatten", ["r"], ["f"], axis=1),
         helper.make_node("MatMul", ["f", "FC"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 10])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B"), numpy_helper.from_array(fc, "FC")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _prepared(onnx_path: Path, batch: int | None, target: str = "server-cpu"):
    import onnx
    import tvm

    from modelkit.targets import registry
    from modelkit.targets.tvm import compile as tvm_compile

    tvm_target = tvm.target.Target(registry.get(target).tvm)
    mod, _, _ = tvm_compile._import(onnx.load(str(onnx_path)), onnx_path.name, batch)
    return tvm_compile._prepare(mod, tvm_target), tvm_target


@pytest.mark.parametrize("batch", [None, 4])
def test_every_primfunc_gets_a_default_schedule(tmp_path, batch):
    from tvm import tirx

    from modelkit.targets.tvm import default_schedule

    mod, tvm_target = _prepared(_conv_onnx(tmp_path / "conv.onnx"), batch)
    funcs = {gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    mod, count = default_schedule.apply(mod, tvm_target)
    assert count == len(funcs) > 0  # a dynamic batch (None) as well: symbolic extents are not vectorized
    texts = {gv.name_hint: f.script() for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    assert all(mod[name].attrs["tirx.is_scheduled"] for name in funcs)
    conv = next(text for name, text in texts.items() if "conv2d" in name)
    assert "T.parallel" in conv and "T.vectorized" in conv and 'scope="local"' in conv  # register tile
    assert "T.max" in conv and "compute" not in [ln.split('"')[1] for ln in conv.splitlines() if "T.sblock(" in ln]


def test_contractions_are_kept_from_the_row_reduction_rule(tmp_path):
    from tvm import tirx

    from modelkit.targets.tvm import default_schedule

    mod, _ = _prepared(_conv_onnx(tmp_path / "conv.onnx"), 1)
    found = {gv.name_hint: default_schedule._has_contraction(f) for gv, f in mod.functions_items()
             if isinstance(f, tirx.PrimFunc)}
    assert any(v for k, v in found.items() if "conv2d" in k) and any(v for k, v in found.items() if "matmul" in k)
    assert not any(v for k, v in found.items() if "softmax" in k)


def test_non_cpu_targets_are_left_alone(tmp_path):
    import tvm

    from modelkit.targets.tvm import default_schedule

    mod, _ = _prepared(_conv_onnx(tmp_path / "conv.onnx"), 1)
    _, count = default_schedule.apply(mod, tvm.target.Target({"kind": "cuda", "arch": "sm_90"}))
    assert count == 0


def test_untuned_library_keeps_parity_at_several_batches(tmp_path):
    from modelkit.targets import compile

    src = _conv_onnx(tmp_path / "conv.onnx")
    result = compile(src, target="server-cpu")  # the hop verifies against onnxruntime
    assert result.parity["ok"] and result.batch is None
    lib, ref = modelkit.load(result.path), modelkit.load(src)
    for n in (1, 3, 32):
        x = np.random.default_rng(n).standard_normal((n, 2, 8, 8)).astype(np.float32)
        np.testing.assert_allclose(lib.predict(x)["probs"], ref.predict(x)["probs"], atol=1e-5)


def test_apply_leaves_its_module_alone_and_a_schedule_that_fails_to_compile_falls_back(tmp_path, monkeypatch,
                                                                                         capsys):
    import tvm
    from tvm import tirx

    from modelkit.targets.tvm import compile as tvm_compile
    from modelkit.targets.tvm import default_schedule

    mod, tvm_target = _prepared(_conv_onnx(tmp_path / "conv.onnx"), 1)
    default_schedule.apply(mod, tvm_target)
    assert not any(f.attrs and "tirx.is_scheduled" in f.attrs for _, f in mod.functions_items()
                   if isinstance(f, tirx.PrimFunc))
    real, seen = tvm.compile, []

    def compile_once_failing(m, target):
        seen.append(m)
        if len(seen) == 1:
            raise RuntimeError("a schedule LLVM rejects")
        return real(m, target=target)

    monkeypatch.setattr(tvm, "compile", compile_once_failing)
    assert tvm_compile._build(mod, tvm_target, None) is not None
    assert len(seen) == 2 and not seen[0].same_as(mod) and seen[1].same_as(mod)
    assert "compiling without them" in capsys.readouterr().err


def _depthwise_on_one_pixel_onnx(path: Path) -> Path:
    """x (1, 4, 1, 1) -> depthwise Conv 5x5, pad 2, + bias -> Flatten -> Softmax: MobileNetV3Small's last
    depthwise conv at a 32x32 input, where the feature map is down to one pixel."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[5, 5], pads=[2, 2, 2, 2], group=4),
         helper.make_node("Flatten", ["c"], ["f"], axis=1),
         helper.make_node("Softmax", ["f"], ["probs"], axis=-1)],
        "dw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 1])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(rng.standard_normal((4, 1, 5, 5)).astype(np.float32), "W"),
         numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


def test_a_depthwise_conv_over_one_pixel_is_scheduled(tmp_path):
    """dlight's GEMV rule (no longer used) raised a bare AssertionError (`assert s_loops`) on a depthwise conv
    over a one-pixel feature map (MobileNetV3Small at 32x32), which failed the whole compile."""
    from modelkit.targets.tvm import default_schedule

    mod, tvm_target = _prepared(_depthwise_on_one_pixel_onnx(tmp_path / "dw.onnx"), 1)
    _, count = default_schedule.apply(mod, tvm_target)
    assert count > 0


def _squeeze_excitation_onnx(path: Path) -> Path:
    """EfficientNet's excitation: x (1, 48, 1, 1) -> 1x1 Conv to 1152 channels -> Sigmoid -> scale y (1, 1152, 2, 2)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[1, 1]),
         helper.make_node("Sigmoid", ["c"], ["s"]),
         helper.make_node("Mul", ["y", "s"], ["out"])],
        "se",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 48, 1, 1]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1152, 2, 2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1152, 2, 2])],
        [numpy_helper.from_array((rng.standard_normal((1152, 48, 1, 1)) * 0.1).astype(np.float32), "W")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_no_default_schedule_is_wider_than_the_targets_vectors(tmp_path):
    """dlight's GEMV rule vectorized 128 outputs of EfficientNetB0's excitation conv (1152 x 48, an inner
    reduction) as strided gathers; LLVM took 469 s on that one function (the whole model: 8 minutes, 2 s
    without). Every vectorized loop of a default schedule is at most the target's lanes."""

    from tvm.target.codegen import llvm_get_vector_width

    from modelkit.targets.tvm import default_schedule

    mod, tvm_target = _prepared(_squeeze_excitation_onnx(tmp_path / "se.onnx"), 1)
    scheduled, count = default_schedule.apply(mod, tvm_target)
    assert count > 0
    lanes = max(llvm_get_vector_width(tvm_target), 128) // 32
    widths = [int(w) for w in re.findall(r"T\.vectorized\(T\.int64\((\d+)\)\)", scheduled.script())]
    assert widths and max(widths) <= lanes, widths


def test_a_dynamic_batch_wakes_the_thread_pool_only_for_enough_work(tmp_path):
    """Waking TVM's pool costs ~3 us a call: with a dynamic batch every small block (a softmax over 10 classes,
    a text model's dense head) was run in parallel anyway, and a text model's untuned call took 47 us instead of
    12 (nc18). A symbolic batch now counts as SYMBOLIC_EXTENT rows: the 8x8 conv still runs in parallel (9,216
    iterations a row), the softmax (10 a row) on one thread, and with 4,096 fixed rows in parallel again."""
    from tvm import tirx

    from modelkit.targets.tvm import default_schedule

    def scripts(batch):
        mod, tvm_target = _prepared(_conv_onnx(tmp_path / f"conv{batch}.onnx"), batch)
        mod, _ = default_schedule.apply(mod, tvm_target)
        return {gv.name_hint: f.script() for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}

    dynamic = scripts(None)
    parallel = {name: "T.parallel" in text for name, text in dynamic.items()}
    assert any(v for k, v in parallel.items() if "conv2d" in k)
    assert not any(v for k, v in parallel.items() if "softmax" in k), parallel
    assert any("T.parallel" in text for name, text in scripts(4096).items() if "softmax" in name)


def test_a_transcendental_weighs_more_than_an_add(tmp_path):
    """Iterations that compute exp / erf / tanh weigh COSTLY_WEIGHT: with a dynamic batch, an Erf over 1,024
    values a row (a GELU) still runs in parallel, as it did before (counting only iterations, an MLP-Mixer
    lost a third at batch 32: 0.64x -> 0.96x onnxruntime), an Add over as many on one thread."""
    import onnx
    from onnx import TensorProto, helper
    from tvm import tirx

    from modelkit.targets.tvm import default_schedule

    graph = helper.make_graph([helper.make_node("Erf", ["x"], ["e"]), helper.make_node("Add", ["x", "x"], ["a"])],
                              "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1024])],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["batch", 1024]),
                               helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 1024])])
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    mod, tvm_target = _prepared(path, None)
    mod, count = default_schedule.apply(mod, tvm_target)
    texts = {gv.name_hint: f.script() for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    assert count == 2, texts.keys()
    assert ["T.parallel" in t for n, t in sorted(texts.items())] == [False, True], sorted(texts)  # add, erf


def test_no_parallel_loop_fuses_more_than_one_symbolic_extent(tmp_path):
    """nc72: a denoiser of any image size (pixel unshuffle and shuffle: 6-D reshapes over batch, height and
    width, all three open). The default schedule fused all outer loops into the parallel one; the index
    expressions of nested divisions by three symbolic extents kept TVM's simplifier busy for over 20 minutes at
    build. In a block without a reduction only a prefix with one symbolic extent is fused now (the rest stay serial
    loops inside it); a convolution's affine indices are cheap to simplify, and it keeps its rows in parallel."""
    pytest.importorskip("torch")
    from tvm import tirx

    from modelkit.targets.tvm import default_schedule
    from tests.helpers.models import torch_denoiser_onnx

    mod, tvm_target = _prepared(torch_denoiser_onnx(tmp_path / "denoiser.onnx"), None)
    mod, count = default_schedule.apply(mod, tvm_target)
    symbolic = {(gv.name_hint, m): set(re.findall(r"\b[a-z_]\w*\b", m)) - {"int64", "int32"}  # n, h, w
                for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)
                for m in re.findall(r" in T\.parallel\((.*)\):$", f.script(), re.M)}
    moves = [len(v) for (name, _), v in symbolic.items() if "conv" not in name]
    convs = [len(v) for (name, _), v in symbolic.items() if "conv" in name]
    assert count > 0 and len(moves) >= 4 and max(moves) == 1, symbolic
    assert max(convs) == 2, symbolic  # a convolution keeps batch and rows in parallel
