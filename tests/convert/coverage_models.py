"""keras.applications as users build them untrained (`weights=None`), for tests/convert/test_applications.py.

`save_application` builds one family under whatever Keras backend its process runs (tests call it in a
child to get .keras files saved under torch and JAX), at a small input size (32x32, or the family's
minimum), with 10 classes. Untrained, a deep net with BatchNormalization is constant for every input:
Keras' initial moving statistics (mean 0, variance 1) let the activations vanish or saturate block after
block. As training would, the moving statistics are set from a few batches of images in the range the
model takes (`calibrate`), so the parity checks compare outputs that really vary with the input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Family:
    """One keras.applications constructor: its smallest input side, and the pixel range it takes
    (0-255 for the families that rescale inside the model, include_preprocessing; else [0, 1), the
    range the verifier draws from when nothing in the model says otherwise)."""

    name: str
    size: int = 32
    raw_pixels: bool = False  # the model rescales 0-255 pixels itself
    # takes 0-255 BGR pixels less ImageNet's channel means (its preprocess_input, "caffe" mode, runs outside the
    # model, so nothing in the model tells the verifier: it draws [0, 1), where VGG16's outputs hardly vary)
    caffe: bool = False
    kwargs: tuple[tuple[str, Any], ...] = ()


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("MobileNet", kwargs=(("alpha", 0.25),)),
    Family("MobileNetV2", kwargs=(("alpha", 0.35),)),
    Family("MobileNetV3Small", raw_pixels=True, kwargs=(("alpha", 0.75),)),
    Family("MobileNetV3Large", raw_pixels=True, kwargs=(("alpha", 0.75),)),
    Family("EfficientNetB0", raw_pixels=True),
    Family("EfficientNetV2B0", raw_pixels=True),
    Family("ResNet50"),
    Family("ResNet50V2"),
    Family("DenseNet121"),
    Family("NASNetMobile"),
    Family("ConvNeXtTiny", raw_pixels=True),
    Family("VGG16", caffe=True),
    Family("Xception", size=71),
    Family("InceptionV3", size=75),
    Family("InceptionResNetV2", size=75),
)}
CLASSES = 10


def pixels(family: Family, n: int, seed: int, size: int | None = None) -> np.ndarray:
    """Float32 images in the family's range (Family): the first half smooth random fields (a 4x4 grid upsampled,
    plus a little pixel noise, so neighbouring pixels correlate as in photographs), the rest uniform
    noise, the inputs the verifier draws (so statistics calibrated on these fit both)."""
    side = size or family.size
    rng = np.random.default_rng(seed)
    rep = -(-side // 4)
    smooth = np.repeat(np.repeat(rng.random((n, 4, 4, 3)), rep, axis=1), rep, axis=2)[:, :side, :side]
    x = np.clip(0.8 * smooth + 0.2 * rng.random((n, side, side, 3)), 0.0, 1.0)
    x[n // 2:] = rng.random((n - n // 2, side, side, 3))
    if family.caffe:
        return (x[..., ::-1] * 255.0 - np.array([103.939, 116.779, 123.68])).astype(np.float32)
    return (x * 255.0 if family.raw_pixels else x).astype(np.float32)


def build(keras: Any, family: Family) -> Any:
    ctor = getattr(keras.applications, family.name)
    return ctor(input_shape=(family.size, family.size, 3), weights=None, classes=CLASSES, **dict(family.kwargs))


def calibrate(keras: Any, model: Any, batches: list[np.ndarray]) -> int:
    """Set every BatchNormalization's moving statistics to those of `batches` (averaged), as training
    does; returns how many layers were set. One forward pass in training mode per batch, with the
    momentum set so the moving averages end at the mean over the batches."""
    bns = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
           if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [bn.momentum for bn in bns]
    for i, batch in enumerate(batches):
        for bn in bns:
            bn.momentum = i / (i + 1)  # running mean over the batches seen
        model(batch, training=True)
    for bn, m in zip(bns, saved):
        bn.momentum = m
    return len(bns)


def save_application(name: str, path: str, seed: int = 0) -> dict[str, Any]:
    """Build family `name` under this process's Keras backend, calibrate it, save it to `path`; returns
    the backend, the input name and the reference outputs on `pixels(family, 4, seed + 100)`."""
    import keras

    family = FAMILIES[name]
    keras.utils.set_random_seed(seed)
    model = build(keras, family)
    calibrate(keras, model, [pixels(family, 16, seed + i) for i in range(3)])
    model.save(path)
    probe = pixels(family, 4, seed + 100)
    out = keras.ops.convert_to_numpy(model(probe, training=False))
    return {"backend": keras.backend.backend(), "input": model.inputs[0].name, "probe": probe.tolist(),
            "outputs": out.tolist()}


def save_and_convert(saves: list[dict[str, Any]], jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """In one child process: save the applications in `saves` (save_application's keyword arguments) under
    its backend, then run the conversion hops `jobs` (tests.convert.dynamic_models.convert_each: each hop's
    summary, or its typed error as a result)."""
    from tests.convert.dynamic_models import convert_each

    saved = {item["path"]: save_application(**item) for item in saves}
    return {"saved": saved, "hops": convert_each(jobs)}
