"""Odd Python values as inputs (ragged or too deeply nested lists, lists holding dicts, strings or None, a
generator, integers that do not fit): a typed InputError naming the input and what is wrong, from the
Signature directly and through a real engine (onnxruntime), never numpy's bare ValueError."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit.errors import DTypeError, InputError, ShapeError
from modelkit.spec import Signature, TensorSpec

SIG = Signature((TensorSpec("x", (None, 4)),), (TensorSpec("probs", (None, 3)),))


def nested(depth: int) -> list:
    value: list = [1.0]
    for _ in range(depth - 1):
        value = [value]
    return value


def containing_itself() -> list:
    value: list = [[1.0, 2.0, 3.0, 4.0]]
    value.append(value)
    return value


ODD = [
    pytest.param([[1, 2], [3]], ShapeError,
                 "input 'x': ragged nested list: row [1] has length 1, row [0] has length 2", id="ragged"),
    pytest.param([[1.0, 2.0, 3.0, 4.0], 5.0], ShapeError, "row [1] is not a list, row [0] has length 4",
                 id="row-not-a-list"),
    pytest.param([[1.0, 2.0, 3.0, [4.0]]], ShapeError, "element [0][3] is a list, nested deeper than the rank",
                 id="deeper-leaf"),
    pytest.param([np.zeros(4, np.float32), np.zeros(3, np.float32)], ShapeError,
                 "row [1] has length 3, row [0] has length 4", id="ragged-arrays"),
    pytest.param(nested(100), ShapeError, "input 'x': expected rank 2 (?, 4), got a list nested at least 3 deep",
                 id="nested-100"),
    pytest.param(containing_itself(), ShapeError, "row [1] has length 2, row [0] has length 4",
                 id="contains-itself"),
    pytest.param([[1.0, {"a": 1}, 3.0, 4.0]], DTypeError,
                 "input 'x': expected numbers of float32, but element [0][1] is a dict ({'a': 1})", id="dict"),
    pytest.param([[1.0, "2.0", 3.0, 4.0]], DTypeError, "element [0][1] is a str ('2.0')", id="str"),
    pytest.param([[None, 1.0, 2.0, 3.0]], DTypeError, "element [0][0] is None", id="none"),
    pytest.param([[2**70, 1, 2, 3]], DTypeError, "element [0][0] is the integer 1180591620717411303424, wider "
                 "than 64 bits", id="int-beyond-64-bits"),
    pytest.param([(i for i in range(4))], DTypeError, "element [0] is a generator", id="list-of-generator"),
    pytest.param((float(i) for i in range(4)), DTypeError,
                 "input 'x': expected a numpy array of float32, got generator (pass a numpy array or a nested "
                 "list of numbers)", id="generator"),
]


@pytest.mark.parametrize("value, error, message", ODD)
def test_signature_names_the_input_and_what_is_wrong(value, error, message):
    with pytest.raises(InputError) as info:
        SIG.bind({"x": value})
    assert type(info.value) is error, (type(info.value), str(info.value))
    assert message in str(info.value)


@pytest.mark.parametrize("value, error, message", ODD)
def test_onnxruntime_engine_raises_the_same_typed_error(tiny_onnx, value, error, message):
    model = modelkit.load(tiny_onnx)
    with pytest.raises(InputError) as info:
        model.predict(value)
    assert type(info.value) is error and message in str(info.value), (type(info.value), str(info.value))


def test_a_list_nested_past_numpys_limit_stops_at_the_rank():
    with pytest.raises(ShapeError, match=r"expected rank 2 \(\?, 4\), got a list nested at least 3 deep"):
        SIG.bind(nested(10_000))


def test_integers_that_do_not_fit_the_integer_dtype_are_refused_not_wrapped():
    sig = Signature((TensorSpec("ids", (None, 2), "int32"),))
    with pytest.raises(DTypeError, match=r"input 'ids': value 1099511627776 does not fit int32 "
                                         r"\(-2147483648 to 2147483647\)"):
        sig.bind([[2**40, 1]])
    with pytest.raises(DTypeError, match="value -2147483649 does not fit int32"):
        sig.bind([[-2**31 - 1, 1]])
    assert sig.bind([[2**31 - 1, -2**31]])["ids"].tolist() == [[2**31 - 1, -2**31]]


def test_well_formed_lists_still_run(tiny_onnx):
    model = modelkit.load(tiny_onnx)
    rows = [[1.0, 2.0, 3.0, 4.0], (0.5, -1, 0, 2)]
    got = model.predict(rows)["probs"]
    np.testing.assert_allclose(got, model.predict(np.asarray(rows, np.float32))["probs"], atol=0)
    assert got.shape == (2, 3)
