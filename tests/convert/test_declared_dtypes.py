"""nc141: every artifact answers in the dtypes its signature declares.

A retrieval head answering with `keras.ops.top_k`'s indices: Keras declares them int32 (its symbolic op, and
the TF and JAX backends), torch computes int64. The .pt2, .torchscript.pt and .pte files answered int64 under
a signature saying int32, while the ONNX file answered int32; parity compared the values only. The torch edges
now cast such an output to the declared dtype in the program (_torch_module._as_declared), and parity refuses
an artifact whose answers differ from its own signature (verify._check_declared).
"""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit import _child
from modelkit.converters.verify import _check_declared
from modelkit.errors import ParityError


def save(path: str) -> str:
    """Scores of 12 candidates, the top 4 with their indices, and the candidates sorted (argsort)."""
    import keras

    x = keras.Input((6,), name="query")
    scores = keras.layers.Dense(12, name="scores")(x)
    values, index = keras.ops.top_k(scores, 4)
    order = keras.ops.argsort(scores, axis=-1)
    keras.Model(x, {"values": values, "index": index, "order": order}).save(path)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("declared") / "retrieval.keras"
    return _child.run("tests.convert.test_declared_dtypes:save", {"path": str(path)}, backend="jax", quiet=True)


@pytest.mark.slow
def test_torch_artifacts_answer_the_declared_index_dtype(source, tmp_path):
    keras_model = modelkit.load(source)
    assert {o.name: o.dtype for o in keras_model.signature.outputs}["index"] == "int32"
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    want = keras_model.predict(x)
    results = modelkit.convert(source, "pt2,torchscript,executorch,onnx", out_dir=tmp_path)
    assert sorted(r.format for r in results) == ["executorch", "onnx", "pt2", "torchscript"]
    for r in results:
        artifact = modelkit.load(r.path)
        declared = {o.name: o.dtype for o in artifact.signature.outputs}
        got = artifact.predict(x)
        assert declared["index"] == declared["order"] == "int32", r.format
        for name in ("index", "order"):
            assert got[name].dtype == np.int32, f"{r.format} '{name}' answers {got[name].dtype}"
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{r.format} '{name}'")


@pytest.mark.slow
def test_parity_refuses_answers_in_another_dtype_than_declared(source, tmp_path):
    (result,) = modelkit.convert(source, "onnx", out_dir=tmp_path)
    artifact = modelkit.load(result.path)
    _check_declared(artifact, "index", np.zeros((2, 4), np.int32))
    with pytest.raises(ParityError, match=r"^output 'index': retrieval\.onnx answers int64, where its signature says "
                                          r"int32$"):
        _check_declared(artifact, "index", np.zeros((2, 4), np.int64))
