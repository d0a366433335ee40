"""nc76: image networks of any size that halve their maps as keras.applications do (a 0/1 zero padding, then a
valid strided convolution), and keras.applications.MobileNetV2 itself with `input_shape=(None, None, 3)`: a
feature extractor a newcomer brings.

Found converting the MobileNetV2 extractor to every format: five of six failed.
- onnx, tflite, openvino, saved_model: "InvalidArgumentError: Exception encountered when calling Add.call()": the
  determinism check ran a single row at 8x8, where TensorFlow's maps run empty, outside its guard.
- After that fix, saved_model: "max abs error 0.000e+00 > atol 1e-05 at 'photo' (1, 13, 64, 3)": Keras under
  TensorFlow "runs" at 13x64 with empty maps, and its global average is NaN. An all-NaN (or empty) reference output
  is nothing to compare: the size is skipped (tests/convert/test_dynamic_dims.py has the verifier's own tests).
- pt2: "parity could be checked at only 1 size(s) [32]": the model was traced at 32x64, where its last map is 1
  high, and the program guards that (torch's memory-format checks), so it refused every taller image. It is now
  traced at 64x96, and the sizes below that its program guards are found and recorded: accepts from 64.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.errors import ShapeError
from modelkit.formats import manifest_path


@pytest.fixture(scope="module")
def halving(tmp_path_factory) -> Path:
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    L = keras.layers
    x = keras.Input((None, None, 3), name="photo")
    h = x
    for ch in (8, 8, 12, 12, 16):  # five halvings: 32 times smaller
        h = L.Conv2D(ch, 3, strides=2, activation="relu")(L.ZeroPadding2D(((0, 1), (0, 1)))(h))
        h = L.Add()([h, L.DepthwiseConv2D(3, padding="same")(h)])
    path = tmp_path_factory.mktemp("halving") / "halving.keras"
    keras.Model(x, L.Dense(3, name="logits")(L.GlobalAveragePooling2D()(h))).save(path)
    return path


def _image(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(h * w).random((2, h, w, 3), dtype=np.float32)


@pytest.mark.slow
def test_pt2_records_the_sizes_its_program_runs_from_and_runs_like_keras_there(halving, tmp_path):
    results = modelkit.convert(halving, "pt2,torchscript,onnx", out_dir=tmp_path)
    assert sorted(r.format for r in results) == ["onnx", "pt2", "torchscript"]
    pt2 = next(r.path for r in results if r.format == "pt2")
    dims = json.loads(manifest_path(Path(pt2)).read_text())["extra"]["dynamic_dims"]["photo"]
    assert dims["1"]["accepts"] == [64, None] and dims["2"]["accepts"] == [64, None]
    keras_model = modelkit.load(halving)
    for r in results:
        artifact = modelkit.load(r.path)
        sizes = [(64, 64), (96, 160), (130, 67), (77, 101)] + ([] if r.format == "pt2" else [(33, 47), (40, 40)])
        for h, w in sizes:
            np.testing.assert_allclose(artifact.predict(_image(h, w))["logits"],
                                       keras_model.predict(_image(h, w))["logits"], atol=1e-4,
                                       err_msg=f"{r.format} at {h}x{w}")
    with pytest.raises(ShapeError, match=r"exported for other input shapes than 'photo' \(2, 63, 63, 3\)"):
        modelkit.load(pt2).predict(_image(63, 63))


@pytest.mark.slow
def test_an_any_size_mobilenetv2_extractor_converts_to_onnx(tmp_path):
    """The newcomer's own kind, TensorFlow's route: failed in the determinism check before parity ran."""
    from modelkit._backend import import_keras
    from tests.convert.coverage_models import calibrate

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(input_shape=(None, None, 3), alpha=0.35, include_top=False, pooling="avg",
                                          weights=None)
    calibrate(keras, base, [_image(64, 96) for _ in range(2)])  # as training would: outputs that vary
    src = tmp_path / "extractor.keras"
    base.save(src)
    (result,) = modelkit.convert(src, "onnx", out_dir=tmp_path / "out")
    skipped = [s["reason"] for s in result.parity["skipped_cases"]]
    assert any(r.endswith("is all NaN at these sizes: nothing to compare") for r in skipped), skipped
    (want,), (got,) = (list(modelkit.load(p).predict(_image(96, 160)).values()) for p in (src, result.path))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)  # features up to ~4: float32 sums
