"""Property tests of Model.predict for every engine: names, ranks, shapes, dtypes, NaN/Inf, empty batches,
huge dimensions, odd memory layouts and odd Python lists (ragged, nested 100 deep, holding dicts, strings or
None) give the right numbers or a typed InputError, never a crash."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modelkit
from modelkit.errors import DTypeError, InputError, InputNameError, ShapeError

from ._build import expected

ENGINES = ["onnx", "keras", "saved_model", "tflite", "torchscript", "pt2", "tvm", "openvino", "executorch"]
EXAMPLES = int(os.environ.get("MODELKIT_TENSOR_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def models(artifacts, request):
    def get(engine):
        built = engine in ("tvm", "openvino", "executorch")  # converted from the onnx (executorch: keras) artifact
        path = request.getfixturevalue(f"{engine}_artifact") if built else artifacts[engine]
        return modelkit.load(path)
    return get


def _layout(x: np.ndarray, layout: str) -> np.ndarray:
    if layout == "strided":  # every other column of a wider array: not contiguous
        wide = np.zeros((x.shape[0], 8), np.float32)
        wide[:, ::2] = x
        return wide[:, ::2]
    if layout == "fortran":
        return np.asfortranarray(x)
    if layout == "readonly":
        x = x.copy()
        x.flags.writeable = False
        return x
    if layout == "bigendian":
        return x.astype(">f4")
    if layout == "transposed":
        return np.ascontiguousarray(x.T).T
    return x


@st.composite
def cases(draw):
    kind = draw(st.sampled_from(["valid", "valid", "valid", "special", "name", "rank", "dim", "dtype", "empty",
                                 "huge", "list", "object", "ragged", "deep", "odd"]))
    batch = draw(st.integers(1, 16))
    values = draw(st.lists(st.floats(-30, 30, width=32), min_size=batch * 4, max_size=batch * 4))
    x = np.asarray(values, np.float32).reshape(batch, 4)
    layout = draw(st.sampled_from(["plain", "strided", "fortran", "readonly", "bigendian", "transposed"]))
    if kind == "valid":
        return {"x": _layout(x, layout)}, "ok", x
    if kind == "special":
        pos = draw(st.lists(st.integers(0, x.size - 1), min_size=1, max_size=4))
        x.ravel()[pos] = draw(st.sampled_from([np.nan, np.inf, -np.inf, np.float32(3e38)]))
        return {"x": _layout(x, layout)}, "special", x
    if kind == "name":
        name = draw(st.text(min_size=0, max_size=12).filter(lambda s: s != "x"))
        extra = draw(st.booleans())
        feed = {name: x, "x": x} if extra else {name: x}
        return feed, (InputNameError, "unexpected" if extra else "missing"), None
    if kind == "rank":
        rank = draw(st.sampled_from([0, 1, 3, 4, 5]))
        return {"x": np.zeros((2,) * rank, np.float32)}, (ShapeError, "expected rank 2"), None
    if kind == "dim":
        d = draw(st.integers(1, 64).filter(lambda d: d != 4))
        return {"x": np.zeros((batch, d), np.float32)}, (ShapeError, "dimension 1 must be 4"), None
    if kind == "dtype":
        dt = draw(st.sampled_from(["float64", "float16", "int32", "int64", "uint8", "bool", "complex64"]))
        return {"x": x.astype(dt)}, (DTypeError, f"expected dtype float32, got {dt}"), None
    if kind == "empty":
        return {"x": np.zeros((0, 4), np.float32)}, (ShapeError, "empty tensor"), None
    if kind == "huge":
        big = draw(st.sampled_from([2**31, 2**40, 2**62 // 16]))
        return {"x": np.broadcast_to(np.float32(1), (big, 4))}, (ShapeError, "more than the limit"), None
    if kind == "list":
        return {"x": x.tolist()}, "ok", x
    if kind == "ragged":  # one more row, shorter than the others
        short = draw(st.integers(0, 3))
        return {"x": x.tolist() + [x[0, :short].tolist()]}, (ShapeError, f"row [{batch}] has length {short}, "
                                                                          "row [0] has length 4"), None
    if kind == "deep":  # numpy alone stops at 64 dimensions with a bare ValueError
        value = x.tolist()
        for _ in range(draw(st.integers(1, 100))):
            value = [value]
        return {"x": value}, (ShapeError, "expected rank 2 (?, 4), got a list nested at least 3 deep"), None
    if kind == "odd":  # something that is not a number inside the rows
        rows, i, j = x.tolist(), draw(st.integers(0, batch - 1)), draw(st.integers(0, 3))
        rows[i][j] = draw(st.sampled_from([{}, "1.5", None, b"1", {1.0}]))
        return {"x": rows}, (DTypeError, f"expected numbers of float32, but element [{i}][{j}] is"), None
    return {"x": np.array([[object()] * 4], dtype=object)}, (DTypeError, "expected dtype float32, got object"), None


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_inputs_give_correct_results_or_typed_errors(engine, models):
    model = models(engine)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(cases())
    def check(case):
        feed, want, x = case
        if want in ("ok", "special"):
            out = model.predict(feed)["probs"]
            assert out.shape == (x.shape[0], 3) and out.dtype == np.float32
            if want == "ok":
                np.testing.assert_allclose(out, expected(x), atol=2e-5, rtol=1e-4)
            else:  # rows without NaN/Inf agree; the engine must not crash on the others
                fine = np.isfinite(x).all(1) & (np.abs(x) < 1e3).all(1)
                np.testing.assert_allclose(out[fine], expected(x[fine]), atol=2e-5, rtol=1e-4)
            return
        error, message = want
        with pytest.raises(InputError) as info:
            model.predict(feed)
        assert isinstance(info.value, error) and message in str(info.value), (type(info.value), str(info.value))

    check()


def _nested(depth: int) -> list:
    value: list = [1.0]
    for _ in range(depth - 1):
        value = [value]
    return value


ODD_VALUES = [
    ([[1.0, 2.0, 3.0, 4.0], [3.0]], ShapeError, "input 'x': ragged nested list: row [1] has length 1, row [0] has "
                                                "length 4"),
    (_nested(100), ShapeError, "input 'x': expected rank 2 (?, 4), got a list nested at least 3 deep"),
    ([[1.0, {}, 3.0, 4.0]], DTypeError, "input 'x': expected numbers of float32, but element [0][1] is a dict"),
    ([[1.0, 2.0, "3", 4.0]], DTypeError, "input 'x': expected numbers of float32, but element [0][2] is a str"),
    ((float(i) for i in range(4)), DTypeError, "input 'x': expected a numpy array of float32, got generator"),
]


@pytest.mark.parametrize("engine", ENGINES)
def test_odd_python_values_are_typed_errors_on_every_engine(engine, models):
    model = models(engine)
    for value, error, message in ODD_VALUES:
        with pytest.raises(InputError) as info:
            model.predict({"x": value})
        assert type(info.value) is error and message in str(info.value), (engine, type(info.value), str(info.value))
