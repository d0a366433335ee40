"""An artifact that does not take its source's inputs (another input name, another dtype) fails its parity check
as the converter's failure (ParityError naming both files), not as the user's bad input: nc32's OpenVINO IR
named its input '_to_copy' and optimize stopped on "input names do not match the signature", exit 2, as if the
user's data were wrong."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from modelkit.converters.registry import Tolerance
from modelkit.converters.verify import compare_models
from modelkit.errors import InputError, ParityError
from modelkit.runtime.base import Model
from modelkit.spec import Signature, TensorSpec

SOURCE = Signature((TensorSpec("tokens", (None, 3), "int32"),), (TensorSpec("p", (None, 3)),))


class _Fn(Model):
    """A model of the given signature computing p = tokens * 2, through Model.predict's real input checks."""

    format, engine = SimpleNamespace(value="onnx"), "numpy"

    def _run(self, inputs):
        return {"p": (next(iter(inputs.values())) * 2).astype(np.float32)}


@pytest.mark.parametrize("inputs, says", [
    ((TensorSpec("_to_copy", (None, 3), "int32"),), "missing ['_to_copy'], unexpected ['tokens']"),
    ((TensorSpec("tokens", (None, 3), "float32"),), "float32"),
])
def test_an_artifact_that_takes_other_inputs_fails_parity_not_the_users_input(inputs, says):
    source = _Fn(Path("ner.keras"), SOURCE)
    artifact = _Fn(Path("ner_openvino"), Signature(inputs, SOURCE.outputs))
    with pytest.raises(ParityError, match=r"ner_openvino does not take the inputs ner.keras runs on: ") as info:
        compare_models(source, artifact, Tolerance(atol=1e-4))
    assert says in str(info.value) and not isinstance(info.value, InputError)
    assert compare_models(source, _Fn(Path("ok.onnx"), SOURCE), Tolerance(atol=1e-4)).ok  # the same model passes
