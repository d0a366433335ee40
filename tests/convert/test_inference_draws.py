"""nc98: a photo classifier with its augmentation inside the model. RandomGrayscale, RandomHue, RandomSaturation,
RandomSharpness, RandomColorDegeneration and RandomPosterization draw a random value per image at inference too (and
return their input): torch.export failed on the draw over a symbolic batch (GuardOnDataDependentSymNode), so pt2,
ExecuTorch and the torch route to ONNX refused the model with torch's boilerplate for a reason."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit._backend import import_keras
from modelkit.converters._inference_draws import UNUSED_AT_INFERENCE


@pytest.mark.slow
def test_augmentation_that_draws_at_inference_exports_to_pt2(tmp_path):
    keras = import_keras("tensorflow")  # saved here; the pt2 edge loads it under torch in its child
    L = keras.layers
    v = {"value_range": (0, 1)}
    augment = keras.Sequential([L.RandomGrayscale(0.3), L.RandomHue(0.2, **v), L.RandomSaturation(0.2, **v),
                                L.RandomSharpness(0.2, **v), L.RandomColorDegeneration(0.2, **v),
                                L.RandomPosterization(4, value_range=(0, 255))], name="augment")
    assert sorted(type(layer).__name__ for layer in augment.layers) == sorted(UNUSED_AT_INFERENCE)
    x = keras.Input((16, 16, 3), name="photo")
    h = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, activation="relu")(augment(x)))
    model = keras.Model(x, L.Dense(3, activation="softmax", name="probs")(h))
    model.save(tmp_path / "photo.keras")
    (r,) = modelkit.convert(tmp_path / "photo.keras", "pt2", out_dir=tmp_path / "out")
    artifact = modelkit.load(r.path)
    for batch in (1, 5):
        images = np.random.default_rng(batch).random((batch, 16, 16, 3)).astype(np.float32)
        np.testing.assert_allclose(artifact.predict(images)["probs"], model.predict(images, verbose=0), atol=1e-5)
