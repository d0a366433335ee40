"""nc94: a Siamese digit verifier whose score is a bilinear form, `ops.einsum("bi,ij,bj->b", a, W, b)`. Five formats
converted; pt2 and ExecuTorch were refused ("Constraints violated (batch)": torch.einsum picks its contraction order
with opt_einsum from the sizes, a guard on the batch), and OpenVINO refused tf2onnx's graph (an Unsqueeze of no axes,
which its frontend reads as adding one) and then the torch route's (the same einsum)."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from tests.helpers.user_code import keras_beside

BILINEAR = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="siamese")
class Bilinear(keras.layers.Layer):
    """a^T W b + c for each pair of rows."""
    def build(self, shapes):
        self.w = self.add_weight(shape=(shapes[0][-1], shapes[1][-1]), initializer="random_normal", name="w")
        self.c = self.add_weight(shape=(1,), initializer="ones", name="c")

    def call(self, inputs):
        a, b = inputs
        return ops.einsum("bi,ij,bj->b", a, self.w, b)[:, None] + self.c
'''


def test_an_unsqueeze_of_no_axes_is_written_as_identity_for_openvino(tmp_path):
    import onnx
    import onnxruntime as ort
    import openvino as ov
    from onnx import TensorProto, helper

    from modelkit.converters.keras_onnx import unsqueeze_nothing_as_identity

    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x", "none"], ["u"]), helper.make_node("Transpose", ["u"], ["y"], perm=[1, 0])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, "batch"])],
        [helper.make_tensor("none", TensorProto.INT64, [0], [])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    onnx.save(proto, tmp_path / "as_written.onnx")
    (want,) = ort.InferenceSession(tmp_path / "as_written.onnx").run(None, {"x": x})
    assert want.shape == (4, 3)  # valid ONNX: no axis added
    try:  # OpenVINO's frontend reads it as adding one (if a later release does not, the rewrite is only harmless)
        ov.convert_model(str(tmp_path / "as_written.onnx"))
    except Exception as exc:  # noqa: BLE001 - the frontend's own error types
        assert "Unsqueeze" in str(exc), exc  # "'axes' input is mandatory" (a Transpose after it in nc94's)
    assert unsqueeze_nothing_as_identity(proto) == 1
    assert [n.op_type for n in proto.graph.node] == ["Identity", "Transpose"]
    onnx.save(proto, tmp_path / "mended.onnx")
    compiled = ov.Core().compile_model(ov.convert_model(str(tmp_path / "mended.onnx")), "CPU")
    np.testing.assert_array_equal(compiled({"x": x})[compiled.outputs[0]], want)


@pytest.mark.slow
def test_a_bilinear_einsum_of_three_operands_converts_with_an_open_batch(tmp_path):
    siamese, keras = keras_beside(tmp_path, "siamese", BILINEAR)
    left, right = keras.Input((6,), name="left"), keras.Input((5,), name="right")
    a, b = keras.layers.Dense(8)(left), keras.layers.Dense(7)(right)
    model = keras.Model({"left": left, "right": right}, keras.layers.Activation("sigmoid", name="same")(
        siamese.Bilinear()([a, b])))
    model.save(tmp_path / "pair.keras")
    imports = [str(tmp_path / "siamese.py")]
    results = modelkit.convert(tmp_path / "pair.keras", "pt2,openvino", out_dir=tmp_path / "out", imports=imports)
    assert {r.format: r.route["taken"] for r in results} == {"pt2": "export", "onnx": "tf2onnx",
                                                             "openvino": "frontend"}, [r.route for r in results]
    rng = np.random.default_rng(0)
    for r in results:
        artifact = modelkit.load(r.path)
        for batch in (1, 3, 9):
            feeds = {"left": rng.normal(size=(batch, 6)).astype(np.float32),
                     "right": rng.normal(size=(batch, 5)).astype(np.float32)}
            np.testing.assert_allclose(artifact.predict(feeds)["same"], model.predict(feeds, verbose=0),
                                       atol=1e-5, err_msg=f"{r.format} batch {batch}")


POOL = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="attn")
class AttentionPool(keras.layers.Layer):
    """Additive attention over time: scores v . tanh(x) W, softmax, weighted sum."""
    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], 16), initializer="glorot_uniform", name="w")
        self.v = self.add_weight(shape=(16,), initializer="glorot_uniform", name="v")

    def call(self, x):
        weights = ops.softmax(ops.einsum("btd,de,e->bt", ops.tanh(x), self.w, self.v), axis=-1)
        return ops.sum(x * weights[..., None], axis=1), weights
'''


def test_three_operand_einsums_contract_left_to_right_keeping_the_first_operands_order():
    from modelkit.converters._tf_einsum import pairwise_plan

    assert pairwise_plan("btd,de,e->bt", 3) == ["btd,de->bte", "bte,e->bt"]
    assert pairwise_plan("bi,ij,bj->b", 3) == ["bi,ij->bj", "bj,bj->b"]
    assert pairwise_plan("abc,cd,d->a", 3) == ["abc,cd->ad", "ad,d->a"]  # b summed where it is last seen
    assert pairwise_plan("ij,jk,kl,lm->im", 4) == ["ij,jk->ik", "ik,kl->il", "il,lm->im"]
    for left in (("ab,bc->ac", 2), ("...a,ab,b->...", 3), ("ab,bc,c", 3), ("aab,bc,c->a", 3)):
        assert pairwise_plan(*left) is None, left  # left to TensorFlow


@pytest.mark.slow
def test_attention_pooling_by_a_three_operand_einsum_converts_to_tflite(tmp_path):
    """nc95. TensorFlow's contraction order wrote `de,btd->ebt` (d=48): a TFLite model that did not load ("invalid
    shape [-1, 8, 16]"); and `btd,d->bt` (d=12), which the converter lowered to shape (1, T) for (T, 1) at an open
    length (parity failed). The layer's `weights[..., None]` had no TFLite builtin over an open length."""
    pool, keras = keras_beside(tmp_path, "attn", POOL)
    rng = np.random.default_rng(1)
    for name, steps, width in (("fixed", 8, 48), ("open", None, 12)):
        rows = keras.Input((steps, width), name="rows")
        pooled, weights = pool.AttentionPool(name="pool")(rows)
        model = keras.Model(rows, {"digit": keras.layers.Dense(10, activation="softmax")(pooled), "where": weights})
        model.save(tmp_path / f"{name}.keras")
        (r,) = modelkit.convert(tmp_path / f"{name}.keras", "tflite", out_dir=tmp_path / name,
                                imports=[str(tmp_path / "attn.py")])
        artifact = modelkit.load(r.path)
        for batch, length in ((1, steps or 1), (3, steps or 5)):
            x = rng.normal(size=(batch, length, width)).astype(np.float32)
            got, want = artifact.predict({"rows": x}), model.predict(x, verbose=0)
            for key in ("digit", "where"):
                np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=f"{name} {key} {x.shape}")


def test_new_axes_are_placed_where_the_index_puts_them():
    from modelkit.converters._tf_newaxis import new_axes

    assert new_axes((Ellipsis, None), 3) == [3]
    assert new_axes((slice(None), slice(1, None), None), 3) == [2]
    assert new_axes((0, None, Ellipsis, None), 3) == [0, 3]  # the int takes its axis away
    assert new_axes((None, Ellipsis, None), 2) == [0, 3]
    assert new_axes((slice(None), [0, 1], None), 3) is None  # a list: left to TensorFlow
    assert new_axes((True, None), 3) is None
