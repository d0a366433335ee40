"""`__typespec__` entries of a Keras config (issue 16, item 9): Keras imports their `module` and calls
`<spec_name>._deserialize`, so they are checked like every other object, not skipped as values. Only
TensorFlow's own TypeSpec classes pass; anything else is UnsafeModelError, whatever the trust flag."""
from __future__ import annotations

import pytest

import modelkit
from modelkit.errors import UnsafeModelError
from modelkit.safety.keras import check_keras_config

from ._build import build_keras
from ._hostile import with_dense_activation


def _typespec(module: str, name: str, config: list) -> dict:
    return {"class_name": "__typespec__", "spec_name": name, "module": module, "config": config,
            "registered_name": None}


@pytest.mark.parametrize("module, name", [("os", "system"), ("subprocess", "Popen"), ("builtins", "eval"),
                                          ("tensorflow.python.ops.gen_io_ops", "write_file")])
def test_typespec_naming_anything_but_a_tensorflow_typespec_is_refused(tmp_path, module, name):
    canary = tmp_path / "canary"
    path = with_dense_activation(build_keras(tmp_path / "tiny.keras"), tmp_path / "evil.keras",
                            _typespec(module, name, [f"touch {canary}"]))
    refused = (rf"config\.config\.layers\[\d\]\.config\.activation is a __typespec__ naming '{module}\.{name}', not a "
               "TensorFlow TypeSpec class")
    with pytest.raises(UnsafeModelError, match=refused):
        modelkit.load(path)
    with pytest.raises(UnsafeModelError, match=refused):
        modelkit.load(path, trust_unsafe_code=True)  # an arbitrary import: nothing lifts it
    assert not canary.exists()


def test_tensorflow_typespecs_pass_the_scan(tmp_path):
    spec = _typespec("tensorflow.python.framework.tensor", "TensorSpec", [[None, 4], "float32", "x"])
    check_keras_config({"class_name": "Functional", "config": {"layers": [], "input_signature": spec}},
                       tmp_path / "m.keras")
