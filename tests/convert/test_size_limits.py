"""The largest size an open dimension takes (modelkit/converters/size_limits.py, modelkit/runtime/size_limits.py).

nc133, a text classifier with a learned table of 64 positions: past 64 tokens onnxruntime, LiteRT, TensorFlow and
torch raised their own errors, OpenVINO returned plausible probabilities and TVM NaN, without a word. The limit is
now found on the ONNX graph, recorded in the manifest and refused by every engine with a ShapeError."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import modelkit
from modelkit.cli import main
from modelkit.errors import ShapeError
from modelkit.manifest import read as read_manifest
from tests.helpers.user_code import keras_beside

POSITIONS = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="pos")
class Positions(keras.layers.Layer):
    """A learned position per step, read as Embedding(arange(length)): takes up to `rows` steps."""
    def __init__(self, rows, dim, **kwargs):
        super().__init__(**kwargs)
        self.rows, self.dim = rows, dim
        self.table = keras.layers.Embedding(rows, dim)

    def call(self, x):
        return x + self.table(ops.arange(ops.shape(x)[1]))[None]

    def get_config(self):
        return {**super().get_config(), "rows": self.rows, "dim": self.dim}


@keras.saving.register_keras_serializable(package="pos")
class WithSummary(keras.layers.Layer):
    """A learned summary step put first, then a slice of a position table (table[:length + 1]): one step fewer."""
    def __init__(self, rows, dim, **kwargs):
        super().__init__(**kwargs)
        self.rows, self.dim = rows, dim

    def build(self, shape):
        self.summary = self.add_weight(shape=(1, 1, self.dim), name="summary")
        self.table = self.add_weight(shape=(self.rows, self.dim), name="table")

    def call(self, x):
        first = ops.broadcast_to(self.summary, (ops.shape(x)[0], 1, self.dim))
        h = ops.concatenate([first, x], axis=1)
        return h + self.table[: ops.shape(h)[1]][None]

    def get_config(self):
        return {**super().get_config(), "rows": self.rows, "dim": self.dim}
'''


def _tagger(tmp_path, layer: str):
    """tokens (any length) -> Embedding -> the position layer -> mean -> 3 classes, saved with its module."""
    pos, keras = keras_beside(tmp_path, "pos", POSITIONS)
    tok = keras.Input((None,), dtype="int32", name="tokens")
    h = getattr(pos, layer)(12, 8)(keras.layers.Embedding(50, 8)(tok))
    out = keras.layers.Dense(3, activation="softmax", name="label")(keras.layers.GlobalAveragePooling1D()(h))
    keras.Model(tok, out).save(tmp_path / "tagger.keras")
    return tmp_path / "tagger.keras", [str(tmp_path / "pos.py")]


def _tokens(length: int) -> np.ndarray:
    return np.random.default_rng(length).integers(0, 50, (2, length)).astype(np.int32)


@pytest.mark.slow
def test_a_position_table_bounds_the_length_on_every_engine(tmp_path):
    src, imports = _tagger(tmp_path, "Positions")
    results = modelkit.convert(src, "onnx,openvino,tvm", out_dir=tmp_path / "out", imports=imports)
    source = modelkit.load(src, imports=imports)
    for r in results:
        limits = read_manifest(r.path).extra["size_limits"]
        assert limits["tokens:1"]["max"] == 12, r.format
        assert "reads a table of 12 rows" in limits["tokens:1"]["why"]
        lib = modelkit.load(r.path)
        np.testing.assert_allclose(lib.predict(_tokens(12))["label"], source.predict(_tokens(12))["label"],
                                   atol=1e-5, err_msg=r.format)
        with pytest.raises(ShapeError, match=r"input 'tokens': axis 1 is 13, past the largest size the model takes "
                                             r"there, 12 \(Gather .* reads a table of 12 rows"):
            lib.predict(_tokens(13))  # OpenVINO returned probabilities there, TVM NaN
    shown = CliRunner().invoke(main, ["inspect", str(results[-1].path)])
    assert shown.exit_code == 0 and "input 'tokens' dimension 1: at most 12 (Gather" in shown.output


@pytest.mark.slow
def test_a_sliced_table_after_a_summary_step_is_found_by_bisection_and_carried_from_a_users_onnx(tmp_path):
    src, imports = _tagger(tmp_path, "WithSummary")
    onnx_path = modelkit.convert(src, "onnx", out_dir=tmp_path / "out", imports=imports)[0].path
    assert read_manifest(onnx_path).extra["size_limits"]["tokens:1"]["max"] == 11  # 12 rows, one step taken
    Path(f"{onnx_path}.modelkit.json").unlink()  # a user's own ONNX file: no manifest, found again on its graph
    ov = modelkit.convert(onnx_path, "openvino", out_dir=tmp_path / "ov")[0]
    lib = modelkit.load(ov.path)
    assert lib.predict(_tokens(11))["label"].shape == (2, 3)
    with pytest.raises(ShapeError, match="axis 1 is 40, past the largest size the model takes there, 11"):
        lib.predict(_tokens(40))


@pytest.mark.slow
def test_of_two_inputs_open_along_one_axis_only_the_one_read_through_the_table_is_bounded(tmp_path):
    pos, keras = keras_beside(tmp_path, "pos", POSITIONS)
    L = keras.layers
    src, tgt = keras.Input((None,), dtype="int32", name="source"), keras.Input((None,), dtype="int32", name="target")
    a = L.GlobalAveragePooling1D()(pos.Positions(12, 8)(L.Embedding(50, 8)(src)))
    b = L.GlobalAveragePooling1D()(L.Embedding(50, 8)(tgt))
    keras.Model([src, tgt], L.Dense(2, name="out")(L.Concatenate()([a, b]))).save(tmp_path / "pair.keras")
    (r,) = modelkit.convert(tmp_path / "pair.keras", "onnx", out_dir=tmp_path / "out",
                            imports=[str(tmp_path / "pos.py")])
    assert set(read_manifest(r.path).extra["size_limits"]) == {"source:1"}
    lib = modelkit.load(r.path)
    assert lib.predict({"source": _tokens(12), "target": _tokens(300)})["out"].shape == (2, 2)
    with pytest.raises(ShapeError, match="input 'source': axis 1 is 13"):
        lib.predict({"source": _tokens(13), "target": _tokens(3)})


@pytest.mark.slow
def test_torch_onnx_export_of_the_table_is_bounded_too(tmp_path):
    src, imports = _tagger(tmp_path, "Positions")
    r = modelkit.convert(src, "onnx", out_dir=tmp_path / "out", imports=imports, route="torch")[0]
    assert r.route["taken"] == "torch"
    assert read_manifest(r.path).extra["size_limits"]["tokens:1"]["max"] == 12
    with pytest.raises(ShapeError, match="axis 1 is 13, past the largest size the model takes there, 12"):
        modelkit.load(r.path).predict(_tokens(13))


@pytest.mark.slow
def test_ids_and_shapes_that_bound_nothing_are_not_candidates(tmp_path):
    from modelkit.converters.size_limits import table_sizes

    _, keras = keras_beside(tmp_path, "pos", POSITIONS)
    tok = keras.Input((None,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(50, 8)(tok)  # a Gather of the table by the input's values: ids, not positions
    keras.Model(tok, keras.layers.GlobalAveragePooling1D()(h)).save(tmp_path / "ids.keras")
    path = modelkit.convert(tmp_path / "ids.keras", "onnx", out_dir=tmp_path / "out")[0].path
    assert table_sizes(path) == {}
    assert "size_limits" not in read_manifest(path).extra


def test_recorded_limits_are_read_for_open_axes_only():
    from types import SimpleNamespace

    from modelkit.runtime.size_limits import check_sizes, size_limits
    from modelkit.spec import Signature, TensorSpec

    sig = Signature((TensorSpec("a", (None, None, 4), "float32"), TensorSpec("b", (None, 5), "float32")),
                    (TensorSpec("y", (None,), "float32"),))
    stored = {"a:1": {"max": 8, "why": "a table"}, "a:2": {"max": 2}, "b:1": {"max": 3}, "c:1": {"max": 1},
              "a:x": {"max": 1}, "a:0": {"max": 1}, "bad": "text", "a:3": {"max": "8"}}
    limits = size_limits(SimpleNamespace(extra={"size_limits": stored}), sig)
    assert limits == {("a", 1): (8, "a table")}
    assert size_limits(None, sig) == {}
    check_sizes(limits, {"a": np.zeros((1, 8, 4), np.float32)})
    with pytest.raises(ShapeError, match=r"input 'a': axis 1 is 9, past the largest size the model takes there, "
                                         r"8 \(a table\)"):
        check_sizes(limits, {"a": np.zeros((1, 9, 4), np.float32)})
