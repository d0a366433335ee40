"""Elementwise functions with no TFLite builtin or no valid tf2onnx op (modelkit.converters._tf_elementwise), a
select over a branch that is NaN where it is not taken (tf2onnx wrote it as c * a + (1 - c) * b), and Python numbers
beside tensors on the torch route (torch.onnx left `Mul(float, int32)` for aten.multiply)."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from tests.helpers.cells import assert_artifacts_agree

# name: (float64 reference, low, high) over which the lowered form is checked
DOMAINS = {"log1p": ("log1p", -0.999, 50.0), "expm1": ("expm1", -30.0, 80.0), "sinh": ("sinh", -85.0, 85.0),
           "cosh": ("cosh", -85.0, 85.0), "tan": ("tan", -1.5, 1.5), "atan": ("arctan", -1e6, 1e6),
           "asin": ("arcsin", -1.0, 1.0), "acos": ("arccos", -1.0, 1.0), "asinh": ("arcsinh", -1e30, 1e30),
           "acosh": ("arccosh", 1.0, 1e30), "atanh": ("arctanh", -0.9999, 0.9999), "erf": ("erf", -6.0, 6.0),
           "erfinv": ("erfinv", -0.99999, 0.99999)}


def _grid(lo: float, hi: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    near_zero = np.array([0.0, 1e-30, -1e-30, 1e-8, -1e-8, 1e-4, -1e-4, lo, hi])
    wide = np.geomspace(1.0, max(abs(lo), abs(hi)), 500)
    x = np.concatenate([np.linspace(lo, hi, 4001), rng.uniform(lo, hi, 4000), near_zero, wide, -wide])
    x = x.astype(np.float32)
    return x[(x >= lo) & (x <= hi)]


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_each_lowered_form_keeps_float32_accuracy(name):
    import scipy.special
    import tensorflow as tf

    from modelkit.converters import _tf_elementwise

    ref_name, lo, hi = DOMAINS[name]
    x = _grid(lo, hi)
    ref = getattr(np, ref_name, None) or getattr(scipy.special, ref_name)
    want = ref(x.astype(np.float64))
    got = getattr(_tf_elementwise, name)(tf.constant(x)).numpy().astype(np.float64)
    assert not np.isnan(got).any()
    rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-30)
    assert rel.max() < 1e-6, (name, float(x[rel.argmax()]), float(rel.max()))


def test_the_edges_are_tensorflows_and_other_dtypes_keep_its_op():
    import tensorflow as tf

    from modelkit.converters._tf_elementwise import lowered_elementwise

    inf = np.inf
    edges = {"log1p": [-1.0, inf], "expm1": [inf, -inf, 100.0], "sinh": [100.0, -100.0], "cosh": [89.0, 90.0],
             "atanh": [1.0, -1.0], "erfinv": [1.0, -1.0, 0.0], "acosh": [1.0, inf], "asinh": [inf, -inf, 0.0],
             "erf": [inf, -inf, 0.0]}
    native = {name: getattr(tf.math, name)(tf.constant(v, tf.float32)).numpy() for name, v in edges.items()}
    with lowered_elementwise():
        assert tf.math.sinh is not tf.raw_ops.Sinh and tf.sinh is tf.math.sinh
        for name, values in edges.items():
            np.testing.assert_allclose(getattr(tf.math, name)(tf.constant(values, tf.float32)).numpy(), native[name],
                                       rtol=1e-6, err_msg=name)
        graph = tf.function(lambda t: tf.math.asin(t), input_signature=[tf.TensorSpec([None])])
        assert "Asin" not in {op.type for op in graph.get_concrete_function().graph.get_operations()}
        complex_asin = tf.function(lambda t: tf.math.asin(t), input_signature=[tf.TensorSpec([None], tf.complex64)])
        assert "Asin" in {op.type for op in complex_asin.get_concrete_function().graph.get_operations()}
    after = tf.function(lambda t: tf.math.asin(t), input_signature=[tf.TensorSpec([None])])  # restored on exit
    assert "Asin" in {op.type for op in after.get_concrete_function().graph.get_operations()}


def _functions_model(keras):
    """A functional model calling each function on its tensors (outside any layer), a select over a branch that is
    NaN where it is not taken, and celu (expm1 under TensorFlow)."""
    ops = keras.ops
    x = keras.Input((4,), name="x")
    h = ops.tanh(keras.layers.Dense(4, name="d")(x)) * 0.9  # in (-0.9, 0.9): every function's domain
    parts = [ops.sinh(h * 3), ops.cosh(h * 3), ops.tan(h), ops.arctan(h * 5), ops.arcsin(h), ops.arccos(h),
             ops.arcsinh(h * 5), ops.arccosh(h * 3 + 4), ops.arctanh(h), ops.erf(h * 2), ops.erfinv(h),
             ops.log1p(h), ops.expm1(h), ops.logaddexp(h, h * 2), keras.activations.celu(h * 3),
             ops.where(h > 0, ops.log(h), 0.0)]
    return keras.Model(x, keras.layers.Dense(3, name="out")(ops.concatenate(parts, axis=-1)))


@pytest.mark.slow
def test_trig_inverse_and_error_functions_convert_to_tflite_and_by_tf2onnx(tmp_path):
    import onnx

    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    _functions_model(keras).save(tmp_path / "functions.keras")
    results = modelkit.convert(tmp_path / "functions.keras", "tflite,onnx", out_dir=tmp_path / "out")
    by_format = {r.format: r for r in results}
    assert by_format["tflite"].route["taken"] == "converter"
    assert by_format["onnx"].route["taken"] == "tf2onnx" and by_format["onnx"].route["tried"] == []
    ops = {n.op_type for n in onnx.load(by_format["onnx"].path).graph.node}
    assert "Where" in ops and not ops & {"Log1p", "Expm1", "Erfinv"}
    source = modelkit.load(tmp_path / "functions.keras")
    assert_artifacts_agree(results, source, "out", [(1, 4), (5, 4), (64, 4)], rtol=1e-4, seed=2)


@pytest.mark.slow
def test_python_numbers_beside_tensors_convert_by_the_torch_route(tmp_path):
    """`h * 3`, `h - 1`, `h / 2`, `h > 0` on a functional model's tensors: onnxruntime refused the torch route's
    graph ("Type parameter (T) of Optype (Mul) bound to different types (tensor(float) and tensor(int32)")."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    ops = keras.ops
    x = keras.Input((4,), name="x")
    h = keras.layers.Dense(4, name="d")(x)
    parts = [h * 3, h - 1, h / 2, ops.cast(h > 0, "float32"), ops.where(h >= 1, h, 0), ops.cast(h != 2, "float32")]
    keras.Model(x, keras.layers.Dense(2, name="out")(ops.concatenate(parts, axis=-1))).save(tmp_path / "numbers.keras")
    (result,) = modelkit.convert(tmp_path / "numbers.keras", "onnx", out_dir=tmp_path / "out", route="torch")
    assert result.route["taken"] == "torch" and result.parity["ok"]
    assert_artifacts_agree([result], modelkit.load(tmp_path / "numbers.keras"), "out", [(3, 4)], rtol=1e-5, seed=3)


def test_aliased_ops_are_retargeted_to_the_ops_torch_onnx_promotes():
    import torch

    from modelkit.converters._torch_aliases import canonical_aliases

    class Numbers(torch.nn.Module):
        def forward(self, x):
            three = torch.tensor(3, dtype=torch.int32)
            return torch.multiply(x, three) + torch.greater(x, three).float() - torch.divide(x, three)

    program = torch.export.export(Numbers(), (torch.rand(2, 4),))
    assert canonical_aliases(program) == 3
    targets = {str(n.target) for n in program.graph_module.graph.nodes if n.op == "call_function"}
    assert {"aten.mul.Tensor", "aten.gt.Tensor", "aten.div.Tensor"} <= targets
    assert not {"aten.multiply.Tensor", "aten.greater.Tensor", "aten.divide.Tensor"} & targets
    x = torch.rand(2, 4) * 6
    torch.testing.assert_close(program.module()(x), Numbers()(x))
