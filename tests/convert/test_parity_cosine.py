"""The cosine check of parity on outputs near zero. Cases of one row of a one-column output compare two
numbers, whose 'cosine' is 0 as soon as one of them is exactly zero: an int8 sigmoid far from its decision
(1e-5 against 0.0) failed the int8 sanity bounds with "cosine similarity 0.000000", and an exact artifact of a
ReLU regressor could fail the same way (0.0 against 3e-9). A case within the atol and COSINE_NOISE is not
judged by its direction; a wrong one still is."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from modelkit.converters.quantize import INT8_TOLERANCE
from modelkit.converters.registry import Tolerance
from modelkit.converters.verify import compare_models
from modelkit.spec import Signature, TensorSpec

EXACT = Tolerance(atol=1e-4, min_cosine=0.9999)
SIG = Signature((TensorSpec("x", (None, 3)),), (TensorSpec("p", (None, 1)),))


def _model(fn):
    return SimpleNamespace(signature=SIG, path=Path("model.onnx"),
                           predict=lambda feed: {"p": fn(feed["x"]).astype(np.float32)})


def _reference(x):  # varies with its input (not a vacuous check), far below 1 on [0, 1) inputs
    return 1e-5 * (1 + x[:, :1])


def test_outputs_near_zero_pass_the_cosine_check_within_the_atol():
    int8 = compare_models(_model(_reference), _model(lambda x: np.zeros((len(x), 1))), INT8_TOLERANCE)
    assert int8.ok, int8.failures()
    exact = compare_models(_model(_reference), _model(lambda x: _reference(x) + 3e-9 * (x[:, :1] > 0.5)), EXACT)
    assert exact.ok, exact.failures()


def test_a_wrong_direction_still_fails_the_cosine_check():
    def reference(x):
        return np.where(x[:, :1] > 0.5, 0.4, -0.4)

    report = compare_models(_model(reference), _model(lambda x: -reference(x)), INT8_TOLERANCE)
    assert not report.ok and "cosine similarity -1.000000 < 0.98" in report.failures()


SIG3 = Signature((TensorSpec("x", (None, 3)),), (TensorSpec("p", (None, 3)),))


def _softmax_model(fn):
    return SimpleNamespace(signature=SIG3, path=Path("model.onnx"),
                           predict=lambda feed: {"p": fn(feed["x"]).astype(np.float32)})


def _uncertain(x):  # a 3-class softmax torn between its first two classes: 0.45 / 0.35 / 0.20 and near
    d = 0.05 + 0.05 * x[:, :1]
    return np.concatenate([0.4 + d, 0.4 - d, np.full_like(d, 0.2)], axis=1)


def test_int8_bounds_judge_the_cosine_over_every_case_at_once():
    """nc188 (a PointNet, int8 ExecuTorch): one uncertain sample at batch 1 whose top two classes swap is a cosine
    of about 0.96, and failed the int8 sanity bounds alone while the accuracy held. Over the 8 rows of both cases
    the cosine is 0.99; a candidate wrong on every row still fails."""
    def swapped(x):
        return _uncertain(x)[:, [1, 0, 2]]

    one_row = _softmax_model(lambda x: swapped(x) if len(x) == 1 else _uncertain(x))
    report = compare_models(_softmax_model(_uncertain), one_row, INT8_TOLERANCE)
    assert report.ok and 0.98 < report.outputs[0].cosine < 0.999, report.failures()
    per_case = Tolerance(atol=1.0, min_cosine=0.98)  # the same bounds, per case: the one row fails them
    failed = compare_models(_softmax_model(_uncertain), one_row, per_case)
    assert not failed.ok and "cosine similarity 0.9" in failed.failures()
    every_row = compare_models(_softmax_model(_uncertain), _softmax_model(swapped), INT8_TOLERANCE)
    assert not every_row.ok and "< 0.98 over all cases at once" in every_row.failures()
