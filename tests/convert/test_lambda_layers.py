"""nc166: a newcomer's `keras.layers.Lambda(lambda t: keras.ops.square(t) * 0.5)`, trusted with --trust-unsafe-code.

Keras restores a Lambda's function with none of the globals of the script that saved it, so `keras` is undefined
when the model loads (keras.saving.load_model fails the same). The error said only "Exception encountered when
calling Lambda.call()" (Keras' "could not infer the shape" hid the NameError); it now names the NameError and what
to do. A Lambda that uses no global converts with parity.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import modelkit
from modelkit import _child
from modelkit.errors import LayerCallError
from tests.helpers.user_code import keras_beside

SCRIPT = '''import keras

HALF_SQUARE = lambda t: keras.ops.square(t) * 0.5  # noqa: E731 - the user's own style
SHIFT = lambda t: t * 0.5 + 1.0  # noqa: E731
'''


def save(folder: str) -> dict:
    """x (6) -> Dense -> Lambda -> Dense(2), once with each of the script's lambdas."""
    script, keras = keras_beside(Path(folder), "script", SCRIPT)
    out = {}
    for name, fn in (("global", script.HALF_SQUARE), ("plain", script.SHIFT)):
        x = keras.Input((6,), name="x")
        h = keras.layers.Lambda(fn, name="half_square")(keras.layers.Dense(8)(x))
        keras.Model(x, keras.layers.Dense(2, name="y")(h)).save(Path(folder) / f"{name}.keras")
        out[name] = str(Path(folder) / f"{name}.keras")
    return out


@pytest.mark.slow
def test_a_lambda_using_a_global_names_the_undefined_name_and_a_plain_one_converts(tmp_path):
    saved = _child.run("tests.convert.test_lambda_layers:save", {"folder": str(tmp_path)}, backend="tensorflow",
                       quiet=True)
    with pytest.raises(LayerCallError) as err:
        modelkit.convert(saved["global"], to="onnx", out_dir=tmp_path / "out", trust_unsafe_code=True)
    message = str(err.value)
    assert "Exception encountered when calling Lambda.call() under the" in message
    assert "NameError: name 'keras' is not defined (Keras restores a Lambda's function without the module" in message
    assert "a registered layer in a module of its own, passed with --import)" in message
    assert not list((tmp_path / "out").glob("global*"))  # nothing written
    (r,) = modelkit.convert(saved["plain"], to="onnx", out_dir=tmp_path / "out", trust_unsafe_code=True)
    assert r.parity["ok"] and r.max_abs < 1e-5
