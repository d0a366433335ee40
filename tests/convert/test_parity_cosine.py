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
