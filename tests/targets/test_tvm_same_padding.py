"""TVM keeps an open length or image side through strided `same` convolutions and pooling
(modelkit/targets/tvm/same_pads.py). tf2onnx writes them with `auto_pad="SAME_UPPER"`, whose padding moves with
the size modulo the stride; TVM 0.27's importer computed it with numpy on the symbolic size ("Cannot use and / or /
not operator to Expr") or int() of it, so every such model (a keyword spotter, keras.applications at any image
size) was refused and needed --input-spec. Models saved under torch, TensorFlow and (slow) JAX; each library is run
at sizes of every residue modulo its strides against Keras here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import _child
from modelkit.formats import manifest_path

pytest.importorskip("tvm", reason="TVM is not installed (pip install 'modelkit[tvm]')")


def _saved(folder: Path, name: str, backend: str) -> Path:
    path = folder / f"{name}_{backend}.keras"
    saved = _child.run("tests.targets.same_padding_models:save", {"models": {name: str(path)}}, backend=backend,
                       quiet=True)
    assert saved["backend"] == backend
    return path


def _compiled_and_matched(src: Path, out: Path, shapes: list[tuple[int, ...]]) -> dict:
    """The model converted to TVM (its open sizes kept), then run at `shapes` against Keras; the manifest."""
    result = modelkit.convert(src, "tvm", out_dir=out)[-1]  # keras -> onnx -> tvm
    manifest = json.loads(manifest_path(Path(result.path)).read_text())
    keras_model, library = modelkit.load(src), modelkit.load(result.path)
    name = keras_model.signature.inputs[0].name
    for shape in shapes:
        x = {name: np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)}
        np.testing.assert_allclose(library.predict(x)["y"], keras_model.predict(x)["y"], atol=1e-4,
                                   err_msg=f"{src.name} at {shape}")
    return manifest


def test_same_pads_are_onnx_s_at_every_size_stride_and_kernel():
    """The TIR padding read at each size: the window starts ONNX puts at `before` and the output length
    ceil(L / s); the total at least ONNX's (a kernel shorter than its stride pads up to ceil(L / s) * s)."""
    from tvm import tirx
    from tvm.sym.analyzer import Analyzer

    from modelkit.targets.tvm.same_pads import same_pads

    size = tirx.Var("L", "int64")

    def at(expr, n):
        analyzer = Analyzer()
        analyzer.bind(size, tirx.const(n, "int64"))
        return int(analyzer.simplify(expr))

    for mode in ("SAME_UPPER", "SAME_LOWER"):
        for stride in range(1, 6):
            for kernel in range(1, 10):
                before, after = same_pads(size, stride, kernel, mode)
                # the padded size is ceil(L / s) * s plus a constant, which TVM's arithmetic sees (a Select on
                # L mod s nested layer after layer hung an image network's import)
                rest = Analyzer().simplify(size + before + after - tirx.floordiv(size + stride - 1, stride) * stride)
                assert isinstance(rest, tirx.IntImm), (mode, stride, kernel, rest)
                for n in range(1, 41):
                    lo, hi = at(before, n), at(after, n)
                    out = -(-n // stride)
                    total = max((out - 1) * stride + kernel - n, 0)
                    want = total // 2 if mode == "SAME_UPPER" else total - total // 2
                    assert lo == want and hi >= total - want and (n + lo + hi - kernel) // stride + 1 == out, \
                        (mode, stride, kernel, n, lo, hi)


def test_the_importer_is_left_as_it_was_on_the_way_out():
    from tvm.relax.frontend.onnx import onnx_frontend as frontend

    from modelkit.targets.tvm.same_pads import symbolic_same_padding

    before = (frontend.autopad, frontend.MaxPool._impl_v1, frontend.AveragePool._impl_v1)
    with symbolic_same_padding():
        assert frontend.autopad is not before[0] and "_impl_v1" in vars(frontend.MaxPool)
    with pytest.raises(KeyError), symbolic_same_padding():
        raise KeyError("an import that fails")
    assert (frontend.autopad, frontend.MaxPool._impl_v1, frontend.AveragePool._impl_v1) == before
    assert "_impl_v1" not in vars(frontend.MaxPool) and "_impl_v1" not in vars(frontend.AveragePool)


@pytest.mark.slow
def test_a_series_model_saved_under_torch_keeps_its_length_open_in_tvm(tmp_path):
    src = _saved(tmp_path, "sequence", "torch")
    shapes = [(2, n, 2) for n in (*range(1, 14), 64, 97)] + [(7, 250, 2)]  # every residue modulo 4, 2, 3 and 3
    manifest = _compiled_and_matched(src, tmp_path / "out", shapes)
    assert manifest["signature"]["inputs"][0]["shape"] == [None, None, 2]
    assert manifest["extra"]["batch"] is None


@pytest.mark.slow
def test_an_image_model_saved_under_tensorflow_keeps_both_sides_open_in_tvm(tmp_path):
    src = _saved(tmp_path, "image", "tensorflow")
    shapes = [(1, 1, 1, 3), (2, 3, 5, 3), (1, 33, 47, 3), (3, 64, 64, 3), (1, 100, 17, 3), (1, 15, 90, 3)]
    manifest = _compiled_and_matched(src, tmp_path / "out", shapes)
    assert manifest["signature"]["inputs"][0]["shape"] == [None, None, None, 3]


def _other_tools_graph(path: Path) -> Path:
    """An ONNX graph as another tool writes one: a float Conv with SAME_LOWER (kernel 4, stride 3) over one open
    length, an int8 MaxPool with SAME_UPPER (3 / 2) over another (padded with int8's lowest, not -inf)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).normal(size=(3, 2, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER", kernel_shape=[4], strides=[3]),
         helper.make_node("MaxPool", ["q"], ["z"], auto_pad="SAME_UPPER", kernel_shape=[3], strides=[2])],
        "tools", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, "length"]),
                  helper.make_tensor_value_info("q", TensorProto.INT8, ["n", 1, "steps"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.INT8, None)],
        [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_an_onnx_graph_with_same_lower_and_int8_max_pooling_keeps_both_lengths_open(tmp_path):
    from modelkit.targets.tvm.edge import onnx_to_tvm

    src = _other_tools_graph(tmp_path / "tools.onnx")
    onnx_to_tvm(src, tmp_path / "tools.tvm.so")
    library, reference = modelkit.load(tmp_path / "tools.tvm.so"), modelkit.load(src)
    rng = np.random.default_rng(1)
    for n, length, steps in [(1, 1, 1), (2, 5, 4), (1, 7, 9), (3, 12, 2), (2, 40, 33)]:
        feed = {"x": rng.normal(size=(n, 2, length)).astype(np.float32),
                "q": rng.integers(-128, 128, (n, 1, steps)).astype(np.int8)}  # -128 in the data: the pad's value
        got, want = library.predict(feed), reference.predict(feed)
        np.testing.assert_allclose(got["y"], want["y"], atol=1e-5, err_msg=f"length {length}")
        np.testing.assert_array_equal(got["z"], want["z"], err_msg=f"steps {steps}")


@pytest.mark.slow
def test_keras_applications_mobilenet_of_any_image_size_saved_under_jax_compiles_with_its_sides_open(tmp_path):
    """Refused before ('image' dim 1 is dynamic); about 25 s to compile."""
    src = _saved(tmp_path, "mobilenet", "jax")
    manifest = _compiled_and_matched(src, tmp_path / "out", [(1, 96, 128, 3), (2, 33, 47, 3), (1, 65, 40, 3)])
    assert manifest["signature"]["inputs"][0]["shape"] == [None, None, None, 3]
