"""nc82: a wine classifier whose custom layer bins each feature among fixed quantile edges (`ops.searchsorted`),
beside an `ops.fori_loop` refinement and a logsumexp pooling (trained under JAX).

Found converting it with `--to all`: only SavedModel and pt2 were written. TensorFlow writes searchsorted as
UpperBound (tf2onnx: "No Op registered", TFLite: no builtin), torch.onnx could not translate aten.searchsorted,
ExecuTorch has no kernel for it, and Keras' torch code passed a traced tensor as a flag under torch.jit.trace
(TypeError). It is now written as comparisons and a count (modelkit.converters._search). So is `ops.digitize` over
constant bins (nc90: a fraud model's risk bucket; TF's Bucketize has no ONNX op and ExecuTorch no aten.bucketize)."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from tests.helpers.user_code import keras_beside

BINS = '''import keras
from keras import ops

EDGES = [[-1.0, 0.0, 0.0, 2.5], [0.1, 0.2, 0.3, 0.4]]


@keras.saving.register_keras_serializable(package="bins")
class Bins(keras.layers.Layer):
    """Each feature's bin among its edges (ties included), counted from the left and from the right."""
    def __init__(self, side="left", **kwargs):
        super().__init__(**kwargs)
        self.side = side

    def call(self, x):
        idx = [ops.searchsorted(ops.convert_to_tensor(e), x[:, j], side=self.side) for j, e in enumerate(EDGES)]
        return ops.cast(ops.stack(idx, axis=1), "float32")

    def get_config(self):
        return {**super().get_config(), "side": self.side}


@keras.saving.register_keras_serializable(package="bins")
class Buckets(keras.layers.Layer):
    """The second feature's bucket among its edges (ops.digitize: nc90's risk bucket)."""
    def call(self, x):
        return ops.cast(ops.digitize(x[:, 1], EDGES[1]), "float32")
'''


def _model(tmp_path):
    bins, keras = keras_beside(tmp_path, "bins", BINS)
    x = keras.Input((2,), name="x")
    outputs = {"left": bins.Bins("left", name="left")(x), "right": bins.Bins("right", name="right")(x),
               "bucket": bins.Buckets(name="bucket")(x)}
    keras.Model(x, outputs).save(tmp_path / "bins.keras")
    return tmp_path / "bins.keras", [str(tmp_path / "bins.py")]


def _samples(batch: int) -> np.ndarray:
    """Values between, below, above and on the edges (a repeated edge too)."""
    on = np.array([[-1.0, 0.1], [0.0, 0.2], [2.5, 0.4], [-5.0, -5.0], [9.0, 9.0]], np.float32)
    rng = np.random.default_rng(batch)
    x = rng.uniform(-2, 3, (batch, 2)).astype(np.float32)
    x[: min(batch, len(on))] = on[: min(batch, len(on))]
    return x


def test_counting_is_searchsorted():
    from keras import ops

    from modelkit.converters._search import counted

    def refused(*args, **kwargs):
        raise AssertionError("a 1-D sequence is counted, not passed on")

    search = counted(refused)
    seq = np.array([-1.0, 0.0, 0.0, 2.5], np.float32)
    values = np.array([[-2.0, -1.0, 0.0], [1.0, 2.5, 3.0]], np.float32)
    for side in ("left", "right"):
        got = ops.convert_to_numpy(search(seq, values, side=side))
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, np.searchsorted(seq, values, side=side))
    assert int(ops.convert_to_numpy(search(seq, np.float32(0.0), side="right"))) == 3


def test_counting_is_digitize():
    from keras import ops

    from modelkit.converters._search import counted_bins

    def own(x, bins):
        return "keras' own"

    digitize = counted_bins(own)
    edges = [-1.0, 0.0, 0.0, 2.5]
    for values in (np.array([[-2.0, -1.0, 0.0], [1.0, 2.5, 3.0]], np.float32), np.array([-3, 0, 1, 2, 3], np.int32)):
        got = ops.convert_to_numpy(digitize(values, edges))
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, np.digitize(values, edges))
    assert digitize(np.zeros(3, np.float32), [2.0, 1.0]) == "keras' own"  # decreasing bins: not counted


@pytest.mark.slow
def test_a_binning_layer_converts_to_onnx_tflite_pt2_and_torchscript(tmp_path):
    src, imports = _model(tmp_path)
    results = modelkit.convert(src, "onnx,tflite,pt2,torchscript", out_dir=tmp_path / "out", imports=imports)
    assert sorted(r.format for r in results) == ["onnx", "pt2", "tflite", "torchscript"]
    assert {r.format: r.route["taken"] for r in results if r.format in ("onnx", "tflite")} == {
        "onnx": "tf2onnx", "tflite": "converter"}
    source = modelkit.load(src, imports=imports)
    for r in results:
        artifact = modelkit.load(r.path)
        for batch in (1, 5, 9):
            got, want = artifact.predict(_samples(batch)), source.predict(_samples(batch))
            for side in ("left", "right", "bucket"):
                np.testing.assert_array_equal(got[side], want[side], err_msg=f"{r.format} {batch} {side}")
    want = source.predict(_samples(5))
    assert want["left"][0].tolist() == [0, 0] and want["right"][1].tolist() == [3, 2]  # the ties, each side
    assert want["bucket"][:4].tolist() == [1, 2, 4, 0]  # on an edge: the bucket above it (np.digitize's)


@pytest.mark.slow
def test_a_binning_layer_runs_in_executorch(tmp_path):
    pytest.importorskip("executorch")
    src, imports = _model(tmp_path)
    (result,) = modelkit.convert(src, "executorch", out_dir=tmp_path / "out", imports=imports)
    source, program = modelkit.load(src, imports=imports), modelkit.load(result.path)
    for batch in (1, 5, 9):
        got, want = program.predict(_samples(batch)), source.predict(_samples(batch))
        for side in ("left", "right", "bucket"):
            np.testing.assert_array_equal(got[side], want[side], err_msg=f"{batch} {side}")
