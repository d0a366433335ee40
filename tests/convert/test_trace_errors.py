"""A layer TensorFlow cannot trace with open dimensions (newcomer trial nc21: Keras 3.15's UpSampling2D bilinear on
an image of any size asks Python for a bool of a symbolic shape). The trace failed as a raw
OperatorNotAllowedInGraphError, first line only, for every TensorFlow format, and no other route was tried. Now
it is a ConversionError that says which dimensions are open and what fixes them, and keras -> onnx goes on to
its torch route, which keeps them open."""
from __future__ import annotations

import json

import numpy as np
import pytest

import modelkit
from modelkit.errors import ConversionError


@pytest.fixture(scope="module")
def upsample_keras(tmp_path_factory):
    from tests.helpers.models import any_size_images

    keras, L, x = any_size_images()
    h = L.UpSampling2D(2, interpolation="bilinear")(L.Conv2D(4, 3, padding="same")(x))
    path = tmp_path_factory.mktemp("up") / "upsample.keras"
    keras.Model(x, L.Dense(3, name="p")(L.GlobalAveragePooling2D()(h))).save(path)
    return path


def test_an_untraceable_layer_says_which_dims_are_open_and_how_to_fix_them(upsample_keras, tmp_path):
    with pytest.raises(ConversionError) as info:
        modelkit.convert(upsample_keras, "saved_model", out_dir=tmp_path)
    msg = str(info.value)
    assert msg.startswith("TensorFlow could not trace the model into a graph (OperatorNotAllowedInGraphError: "
                          "Exception encountered when calling UpSampling2D.call().)"), msg
    assert "input 'image' has open dimensions [None, None, None, 3]" in msg
    assert "--input-spec image:?,64,64,3:float32" in msg and "\n" not in msg
    assert not list(tmp_path.iterdir())  # nothing written


def test_onnx_takes_the_torch_route_and_keeps_the_sides_open(upsample_keras, tmp_path):
    r = modelkit.convert(upsample_keras, "onnx", out_dir=tmp_path)[0]
    assert r.parity["ok"]
    route = json.loads((tmp_path / "upsample.onnx.modelkit.json").read_text())["extra"]["route"]
    assert [t["type"] for t in route["tried"]] == ["ConversionError"]
    assert "TensorFlow could not trace" in route["tried"][0]["error"]
    onnx_model, keras_model = modelkit.load(r.path), modelkit.load(upsample_keras)
    x = np.random.default_rng(3).random((2, 9, 5, 3), dtype=np.float32)
    np.testing.assert_allclose(onnx_model.predict(x)["p"], keras_model.predict(x)["p"], atol=1e-4)
