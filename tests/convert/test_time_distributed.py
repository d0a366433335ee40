"""TimeDistributed over an open number of steps (modelkit/converters/_time_distributed.py): its layer called once
on the batch and time axes folded together. Keras' vectorized map over the steps gave a SavedModel and an ONNX
model that failed at one step, and under torch fixed the step count at the traced size (nc130, a clip
classifier); the layer ran once per step when the count was fixed."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """(batch, steps, 6, 6, 2) frames through TimeDistributed Conv2D, MaxPooling2D, Flatten and Dense, to a clip
    output (averaged over the steps) and a per-step output."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    L = keras.layers
    keras.utils.set_random_seed(5)
    inp = keras.Input((None, 6, 6, 2), name="frames")
    h = L.TimeDistributed(L.Conv2D(4, 3, padding="same", activation="relu"))(inp)
    h = L.TimeDistributed(L.MaxPooling2D())(h)
    h = L.TimeDistributed(L.Dense(5, activation="tanh"))(L.TimeDistributed(L.Flatten())(h))
    model = keras.Model(inp, [L.Dense(3, name="clip")(L.GlobalAveragePooling1D()(h)), L.Dense(2, name="step")(h)])
    path = tmp_path_factory.mktemp("frames") / "frames.keras"
    model.save(path)
    return path, model


@pytest.mark.slow
def test_any_number_of_steps_in_every_backend(frames, tmp_path):
    src, model = frames
    results = modelkit.convert(src, "onnx,saved_model,tflite,pt2,executorch", out_dir=tmp_path)
    for r in results:
        lib = modelkit.load(r.path)
        assert tuple(lib.signature.inputs[0].shape[:2]) == (None, None), r.format
        for steps in (1, 2, 13):
            x = np.random.default_rng(steps).normal(size=(3, steps, 6, 6, 2)).astype(np.float32)
            clip, step = (np.asarray(t) for t in model(x))  # eager: Keras' own predict() fails at 1 step too
            got = lib.predict({"frames": x})
            np.testing.assert_allclose(got["clip"], clip, atol=1e-5, err_msg=f"{r.format} at {steps} steps")
            np.testing.assert_allclose(got["step"], step, atol=1e-5, err_msg=f"{r.format} at {steps} steps")
