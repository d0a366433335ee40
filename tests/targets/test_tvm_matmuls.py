"""Attention over an open length for TVM (modelkit/targets/tvm/matmuls.py): tf2onnx's Einsum folds the batch and
the heads into one axis around a 3-D MatMul, which no constant Reshape target says; the folding Reshapes become
Squeezes (the MatMul broadcasts over batch and heads), and the projections' Gemms the MatMuls they are. Before,
a MultiHeadAttention with an open length was refused by TVM (nc107)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")
onnx = pytest.importorskip("onnx")

from modelkit.targets.tvm import matmuls  # noqa: E402


@pytest.fixture(scope="module")
def attention(tmp_path_factory):
    """(folder, a Keras tagger over tokens of any length: self-attention (2 heads), a residual LayerNormalization,
    a cross-attention to a fixed memory of 6 steps, a Dense per step; its ONNX by modelkit)."""
    import modelkit
    from modelkit._backend import import_keras

    folder = tmp_path_factory.mktemp("attention")
    keras = import_keras()
    keras.utils.set_random_seed(4)
    L = keras.layers
    x, memory = keras.Input((None, 16), name="tokens"), keras.Input((6, 12), name="memory")
    h = L.LayerNormalization()(L.Add()([x, L.MultiHeadAttention(2, 8, name="self_attn")(x, x)]))
    h = L.MultiHeadAttention(4, 4, name="cross_attn")(h, memory)
    keras.Model([x, memory], L.Dense(3, name="tags")(h)).save(folder / "attn.keras")
    modelkit.convert(folder / "attn.keras", to="onnx", out_dir=folder)
    return folder


@pytest.mark.slow
def test_attention_of_any_length_compiles_with_tvm_and_matches_onnxruntime(attention, tmp_path):
    import modelkit
    from modelkit._onnx import slim
    from modelkit.targets.tvm.edge import onnx_to_tvm

    proto = slim(onnx.load(str(attention / "attn.onnx")))
    proto, _ = matmuls.gemms_as_matmuls(proto)
    _, unfolded = matmuls.unfolded_matmuls(proto)
    assert unfolded == 4  # scores and values of each attention
    onnx_to_tvm(attention / "attn.onnx", tmp_path / "attn.tvm.so")
    lib, reference = modelkit.load(tmp_path / "attn.tvm.so"), modelkit.load(attention / "attn.onnx")
    assert {s.name: tuple(s.shape) for s in lib.signature.inputs} == {"tokens": (None, None, 16),
                                                                       "memory": (None, 6, 12)}
    rng = np.random.default_rng(0)
    for batch, length in [(1, 5), (3, 41), (2, 1)]:  # lengths none of the probes or parity cases used
        feed = {"tokens": rng.normal(size=(batch, length, 16)).astype(np.float32),
                "memory": rng.normal(size=(batch, 6, 12)).astype(np.float32)}
        got, want = lib.predict(feed)["tags"], reference.predict(feed)["tags"]
        assert got.shape == (batch, length, 3)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_what_cannot_be_unfolded_is_left_as_it_is():
    # (n, m, c) = the input's first k axes folded, then its other axes less the unit ones
    ins = [(1, 2, 32, 1, 8), (2, 2, 32, 1, 8), (1, 2, 64, 1, 8), (3, 2, 96, 1, 8)]
    outs = [(i[0] * 2, i[2], 8) for i in ins]
    assert matmuls._unfold(ins, outs) == (2, [3], [i[:2] for i in ins])
    assert matmuls._unfold(ins, [(i[0] * 2 * i[2], 1, 8) for i in ins]) is None  # the length folded in too
    assert matmuls._unfold(ins, [(i[0], 2 * i[2], 8) for i in ins]) is None  # heads merged with the length
    assert matmuls._unfold(ins, None) is None
