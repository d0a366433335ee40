"""nc73: a denoising U-Net of any image size (three 2x poolings; nearest UpSampling2D and a Conv2DTranspose
back up, each concatenated with its skip). It takes only sides that are multiples of 8.

Found on a newcomer's model trained on digits: parity tried sizes 1, 13, 64 then 29, 100, 256 and the model ran
at none of them (100 pools to 12, which comes back as 24, not 25), so every format failed ("parity could be
checked at only 1 size(s) [16]"; without samples "no verification case ran"). Parity now goes on to multiples of
32 (modelkit/converters/_shapes.ALIGNED_SIZES). TFLite failed even so: the nearest upsampling (keras.ops.repeat)
left the TFLite converter no known dims, and the convolution after the concatenation needed Flex ops ("TF Select
ops: Conv2D"); repeat is traced keeping its known dims (modelkit/converters/_tf_lowering.py). The torch formats
failed at the trace: the example sizes (8 and 10) are not sizes the model runs at ("Sizes of tensors must match
... Expected 4 in dimension 2 but got (s69//2)"); a model that runs only at multiples of a stride is now traced at
64 and 96 (modelkit/converters/_torch_examples.fit_examples; 32 and 64 before nc76)."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    L = keras.layers

    def block(t, f):
        return L.Conv2D(f, 3, padding="same", activation="relu")(t)

    x = keras.Input((None, None, 1), name="noisy")
    d1 = block(x, 4)
    d2 = block(L.MaxPooling2D()(d1), 6)
    d3 = block(L.MaxPooling2D()(d2), 8)
    b = block(L.MaxPooling2D()(d3), 8)
    u3 = block(L.Concatenate()([L.UpSampling2D()(b), d3]), 8)
    u2 = block(L.Concatenate()([L.Conv2DTranspose(6, 2, strides=2)(u3), d2]), 6)
    u1 = block(L.Concatenate()([L.UpSampling2D()(u2), d1]), 4)
    out = L.Conv2D(1, 1, activation="sigmoid", name="clean")(u1)
    path = tmp_path_factory.mktemp("unet") / "unet.keras"
    keras.Model(x, out).save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("formats", ["onnx,tflite", "pt2,torchscript"])
def test_a_unet_of_any_size_converts_with_its_sides_open_and_checked_at_sizes_it_takes(unet, tmp_path, formats):
    results = modelkit.convert(unet, formats, out_dir=tmp_path)
    assert sorted(r.format for r in results) == formats.split(",")
    x = np.random.default_rng(1).random((2, 40, 24, 1), dtype=np.float32)  # multiples of 8 no check used
    want = modelkit.load(unet).predict(x)["clean"]
    for r in results:
        for axis in ("1", "2"):
            dim = r.parity["dynamic_dims"]["noisy"][axis]
            assert dim["dynamic"] and set(dim["sizes"]) >= {32, 96} and 13 in dim["not_verified"], (r.format, dim)
        np.testing.assert_allclose(modelkit.load(r.path).predict(x)["clean"], want, atol=1e-5, err_msg=r.format)
