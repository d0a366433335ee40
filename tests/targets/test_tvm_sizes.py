"""Sizes computed from an open length, traced to their axes for TVM (modelkit/targets/tvm/sizes.py): a Range whose
limit is computed from an input's length had no shape in TVM's importer, so a causal mask (`use_causal_mask=True`)
and positions from `ops.arange(length)` were refused at an open length; each such Range is now a count of the axis
it spans. A mask expanded to a shape computed through Casts and a Concat is given that shape as one-axis Shapes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")
onnx = pytest.importorskip("onnx")

from modelkit.targets.tvm import sizes  # noqa: E402


def _positions(path, start: int, step: int, past_the_axis: int = 0):
    """x (batch, length, 3) times sin(positions), transposed: positions = Range(start, start + step * length, step)
    (length elements), or with past_the_axis = k Range(0, length + k, 1) less its first k elements (a Range of a
    length that is no axis's)."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name, value):
        return numpy_helper.from_array(np.array(value, np.int64), name)

    inits = [const("start", start), const("step", step), const("one", 1), const("axes", [0, 2]),
             const("extra", past_the_axis), const("from", [past_the_axis]), const("to", [2 ** 62]),
             const("axis0", [0])]
    nodes = [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Gather", ["shape", "one"], ["n"], axis=0)]
    if past_the_axis:
        nodes += [helper.make_node("Add", ["n", "extra"], ["limit"]),
                  helper.make_node("Range", ["start", "limit", "step"], ["all"]),
                  helper.make_node("Slice", ["all", "from", "to", "axis0"], ["positions"])]
    else:
        nodes += [helper.make_node("Mul", ["n", "step"], ["span"]),
                  helper.make_node("Add", ["span", "start"], ["limit"]),
                  helper.make_node("Range", ["start", "limit", "step"], ["positions"])]
    nodes += [helper.make_node("Cast", ["positions"], ["p"], to=TensorProto.FLOAT),
              helper.make_node("Sin", ["p"], ["s"]), helper.make_node("Unsqueeze", ["s", "axes"], ["s3"]),
              helper.make_node("Mul", ["x", "s3"], ["m"]), helper.make_node("Transpose", ["m"], ["y"], perm=[0, 2, 1])]
    graph = helper.make_graph(nodes, "positions",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3, "n"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _matches_onnxruntime(lib_path, onnx_path, feeds):
    import modelkit

    lib, reference = modelkit.load(lib_path), modelkit.load(onnx_path)
    for feed in feeds:
        got, want = lib.predict(feed), reference.predict(feed)
        for name, value in want.items():
            assert got[name].shape == value.shape
            np.testing.assert_allclose(got[name], value, atol=1e-5)


def test_positions_of_a_strided_range_compile_with_the_length_open(tmp_path):
    from modelkit.targets.tvm.edge import onnx_to_tvm

    src = _positions(tmp_path / "positions.onnx", start=2, step=3)
    rewritten, count = sizes.counted_ranges(onnx.load(str(src)))
    assert count == 1 and "Range" not in [n.op_type for n in rewritten.graph.node]
    onnx_to_tvm(src, tmp_path / "positions.tvm.so")
    rng = np.random.default_rng(0)
    _matches_onnxruntime(tmp_path / "positions.tvm.so", src,
                         [{"x": rng.normal(size=(b, n, 3)).astype(np.float32)} for b, n in [(1, 1), (2, 7), (3, 40)]])


def test_a_range_of_a_length_that_is_no_axis_is_left_and_refused_typed(tmp_path):
    from modelkit.errors import UnsupportedConversionError
    from modelkit.targets.tvm.edge import onnx_to_tvm

    # n + 7 is the made-up size of the next axis in one of the two evaluations of the limit: not taken either
    assert sizes.counted_ranges(onnx.load(str(_positions(tmp_path / "p7.onnx", 0, 1, past_the_axis=7))))[1] == 0
    src = _positions(tmp_path / "past.onnx", start=0, step=1, past_the_axis=1)
    assert sizes.counted_ranges(onnx.load(str(src)))[1] == 0
    with pytest.raises(UnsupportedConversionError) as err:
        onnx_to_tvm(src, tmp_path / "past.tvm.so")
    text = str(err.value)
    assert "whose dimension 'x' dim 1 is dynamic: it could not legalize the import" in text
    assert "for TVM, fix it with --input-spec x:?,64,3:float32" in text
    assert not list(tmp_path.glob("past.tvm.so*"))


@pytest.fixture(scope="module")
def cross_causal(tmp_path_factory):
    """A Keras causal cross-attention, query and memory both of open length (saved on TensorFlow), as ONNX."""
    import modelkit
    from modelkit._backend import import_keras

    folder = tmp_path_factory.mktemp("cross_causal")
    keras = import_keras()
    keras.utils.set_random_seed(2)
    L = keras.layers
    q, memory = keras.Input((None, 16), name="query"), keras.Input((None, 12), name="memory")
    h = L.MultiHeadAttention(2, 4, name="attn")(q, memory, use_causal_mask=True)
    keras.Model([q, memory], L.Dense(3, name="out")(h)).save(folder / "cross.keras")
    modelkit.convert(folder / "cross.keras", to="onnx", out_dir=folder)
    return folder / "cross.onnx"


@pytest.mark.slow
def test_a_causal_mask_of_two_lengths_counts_each_on_its_own_axis(cross_causal, tmp_path):
    """The probes give the query and the memory the same length; each Range must still count its own axis of the
    scores (queries: axis 2, keys: axis 3), or the mask is wrong whenever the two lengths differ."""
    from modelkit._onnx import slim
    from modelkit.targets.tvm.edge import onnx_to_tvm

    proto = slim(onnx.load(str(cross_causal)))
    rewritten, count = sizes.counted_ranges(proto)
    assert count == 2
    gathered = {n.output[0]: n for n in rewritten.graph.node if n.op_type == "Gather" and "__count" in n.output[0]}
    axes = {int(onnx.numpy_helper.to_array(i)[0]) for i in rewritten.graph.initializer
            if i.name in {n.input[1] for n in gathered.values()}}
    assert axes == {2, 3}
    onnx_to_tvm(cross_causal, tmp_path / "cross.tvm.so")
    rng = np.random.default_rng(1)
    feeds = [{"query": rng.normal(size=(b, nq, 16)).astype(np.float32),
              "memory": rng.normal(size=(b, nk, 12)).astype(np.float32)} for b, nq, nk in [(1, 3, 9), (2, 17, 5)]]
    _matches_onnxruntime(tmp_path / "cross.tvm.so", cross_causal, feeds)


POSITIONS = '''import keras


@keras.saving.register_keras_serializable(package="s2s")
class AddPositions(keras.layers.Layer):
    """Learned positions (a table of 64) added to token embeddings; keeps their padding mask."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.table = keras.layers.Embedding(64, 16)
        self.supports_masking = True

    def call(self, x):
        return x + self.table(keras.ops.arange(keras.ops.shape(x)[1]))[None]
'''


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    """nc110's kind: an encoder-decoder Transformer over token ids, source and target of open lengths, padding
    masks on both sides (Embedding mask_zero), causal self-attention and cross-attention in the decoder, learned
    positions from a table of 64 rows (the user's own layer); saved on TensorFlow, as ONNX."""
    import modelkit
    from tests.helpers.user_code import keras_beside

    folder = tmp_path_factory.mktemp("translator")
    positions, keras = keras_beside(folder, "positions", POSITIONS)
    L = keras.layers
    src, tgt = keras.Input((None,), dtype="int32", name="source"), keras.Input((None,), dtype="int32", name="target")
    memory = positions.AddPositions()(L.Embedding(13, 16, mask_zero=True)(src))
    memory = L.LayerNormalization()(L.Add()([memory, L.MultiHeadAttention(2, 8)(memory, memory)]))
    h = positions.AddPositions()(L.Embedding(13, 16, mask_zero=True)(tgt))
    h = L.LayerNormalization()(L.Add()([h, L.MultiHeadAttention(2, 8)(h, h, use_causal_mask=True)]))
    h = L.LayerNormalization()(L.Add()([h, L.MultiHeadAttention(2, 8)(h, memory)]))
    keras.Model([src, tgt], L.Dense(13, name="next")(h)).save(folder / "translator.keras")
    modelkit.convert(folder / "translator.keras", to="onnx", out_dir=folder, imports=[str(folder / "positions.py")])
    return folder / "translator.onnx"


@pytest.mark.slow
def test_a_translator_with_padding_masks_and_a_position_table_compiles_with_both_lengths_open(translator, tmp_path):
    """Refused before: the probes ran the graph at a length of 96, past the 64 positions, so no computed shape was
    made constant (reshapes.SMALL_PROBES now); and the decoder's padding-and-causal mask is `Expand(ones,
    Cast(Concat(1, Slice(Cast(Shape(x))), ...)))`, whose shape TVM's importer lost (traced_shapes)."""
    from modelkit.targets.tvm.edge import onnx_to_tvm

    onnx_to_tvm(translator, tmp_path / "translator.tvm.so")
    rng = np.random.default_rng(3)
    feeds = []
    for b, ns, nt in [(1, 3, 1), (2, 12, 7), (3, 5, 13)]:
        src = rng.integers(1, 11, size=(b, ns)).astype(np.int32)
        src[:, -1] = 0  # padding
        feeds.append({"source": src, "target": rng.integers(1, 12, size=(b, nt)).astype(np.int32)})
    _matches_onnxruntime(tmp_path / "translator.tvm.so", translator, feeds)


def test_a_computed_shape_is_traced_element_by_element_or_not_at_all():
    rounds = [{1003: ("x", 0), 1010: ("x", 1)}, {3001: ("x", 0), 3132: ("x", 1)}]
    assert sizes._pieces([[1, 1010, 1010], [1, 3132, 3132]], rounds) == [1, ("x", 1), ("x", 1)]
    assert sizes._pieces([[1010, 4], [3001, 4]], rounds) is None  # another axis in the second round
    assert sizes._pieces([[1, 4], [1, 4]], rounds) is None  # constant: nothing to trace
    assert sizes._pieces([[1010, 2 * 1010], [3132, 2 * 3132]], rounds) is None  # twice an axis: no one axis


FLIP = '''import keras


@keras.saving.register_keras_serializable(package="flip")
class Backwards(keras.layers.Layer):
    def call(self, x):
        return keras.ops.flip(x, axis=1)
'''


@pytest.mark.slow
def test_a_sequence_flipped_over_its_open_length_compiles(tmp_path):
    """`ops.flip` over an open length: tf2onnx writes a ReverseSequence whose lengths are the length expanded over
    the batch (`Expand(Gather(Shape), Gather(Shape))`); TVM's importer failed on it ("'ShapeType' object has no
    attribute 'shape'") until that shape was traced (and its reversal's Range counted)."""
    import modelkit
    from modelkit.targets.tvm.edge import onnx_to_tvm
    from tests.helpers.user_code import keras_beside

    flip, keras = keras_beside(tmp_path, "flip", FLIP)
    x = keras.Input((None, 8), name="x")
    keras.Model(x, keras.layers.Dense(3, name="y")(flip.Backwards()(x))).save(tmp_path / "flip.keras")
    (r,) = modelkit.convert(tmp_path / "flip.keras", "onnx", out_dir=tmp_path, imports=[str(tmp_path / "flip.py")])
    onnx_to_tvm(Path(r.path), tmp_path / "flip.tvm.so")
    rng = np.random.default_rng(5)
    _matches_onnxruntime(tmp_path / "flip.tvm.so", r.path,
                         [{"x": rng.normal(size=(b, n, 8)).astype(np.float32)} for b, n in [(1, 1), (2, 6), (3, 33)]])
