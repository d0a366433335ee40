"""keras -> executorch (.pte, XNNPACK): parity of the trained digits CNN, the engine (executorch.runtime) with the
Signature read from inside the program, the batch range ExecuTorch plans memory for, and typed errors for a wrong
shape, a batch past the maximum and a damaged program."""
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.converters.keras_executorch import MAX_BATCH, TOLERANCE
from modelkit.errors import FormatError, LoadError, ShapeError, UnsupportedConversionError
from modelkit.formats import Format, detect, manifest_path

pytestmark = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                reason="executorch is not installed (pip install 'modelkit[executorch]')")


@pytest.fixture(scope="module")
def pte(cnn_tf, tmp_path_factory) -> Path:
    (r,) = modelkit.convert(cnn_tf, "executorch", out_dir=tmp_path_factory.mktemp("executorch"))
    return Path(r.path)


@pytest.fixture(scope="module")
def model(pte):
    return modelkit.load(pte)


def test_parity_of_trained_cnn_and_manifest(pte):
    assert pte.suffix == ".pte" and detect(pte) == Format.EXECUTORCH
    assert pte.read_bytes()[4:8] == b"ET12"
    m = json.loads(manifest_path(pte).read_text())
    assert m["format"] == "executorch"
    parity = m["parity"]
    assert parity["ok"] and [c["batch"] for c in parity["cases"]] == [1, 7]
    assert parity["tolerance"]["atol"] == TOLERANCE.atol
    (probs,) = parity["outputs"]
    assert probs["name"] == "probs" and probs["max_abs"] <= 1e-5 and probs["argmax_agreement"] == 1.0
    edge = m["chain"][-1]
    assert edge["converter"] == "modelkit.converters.keras_executorch:keras_to_executorch"
    assert edge["versions"]["executorch"].startswith("1.5") and edge["versions"]["torch"].startswith("2.13")


def test_engine_runs_batches_up_to_the_planned_maximum(model, cnn_tf, pte):
    assert model.engine == "executorch" and model.format == Format.EXECUTORCH
    assert model.signature.input_names == ["image"] and model.signature.output_names == ["probs"]
    assert model.signature.inputs[0].shape == (None, 8, 8, 1) and model.max_batch == MAX_BATCH
    keras_model = modelkit.load(cnn_tf)
    rng = np.random.default_rng(3)
    for batch in (1, 5, MAX_BATCH):
        x = rng.random((batch, 8, 8, 1), dtype=np.float32)
        got, want = model.predict(x)["probs"], keras_model.predict(x)["probs"]
        assert got.shape == (batch, 10) and np.abs(got - want).max() <= TOLERANCE.atol
    x = rng.random((2 * MAX_BATCH + 5, 8, 8, 1), dtype=np.float32)  # past the planned batch: run in slices
    got, want = model.predict(x)["probs"], keras_model.predict(x)["probs"]
    assert got.shape == (2 * MAX_BATCH + 5, 10) and np.abs(got - want).max() <= TOLERANCE.atol


def test_wrong_input_shape_is_a_shape_error(model):
    with pytest.raises(ShapeError):
        model.predict(np.zeros((2, 9, 8, 1), np.float32))
    with pytest.raises(ShapeError):
        model.predict(np.zeros((2, 8, 8), np.float32))


def test_signature_travels_inside_the_program(pte, tmp_path):
    bare = tmp_path / "copy.pte"
    shutil.copy(pte, bare)  # no manifest beside it
    m = modelkit.load(bare)
    assert m.signature.input_names == ["image"] and m.signature.output_names == ["probs"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped"])
def test_damaged_program_is_a_load_error(pte, tmp_path, damage):
    data = bytearray(pte.read_bytes())
    rng = np.random.default_rng(0)
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data[8:] = rng.integers(0, 256, len(data) - 8, dtype=np.uint8).tobytes()
    else:
        for i in rng.integers(8, len(data), 64):
            data[i] ^= 0xFF
    bad = tmp_path / f"{damage}.pte"
    bad.write_bytes(bytes(data))
    assert detect(bad) == Format.EXECUTORCH  # the header survives; the runtime's verifier refuses the rest
    with pytest.raises(LoadError):
        modelkit.load(bad).predict(np.zeros((1, 8, 8, 1), np.float32))


def test_no_identifier_is_not_executorch(tmp_path):
    p = tmp_path / "x.pte"
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(FormatError):
        detect(p)


def test_cuda_is_refused_not_ignored(pte):
    with pytest.raises(LoadError):
        modelkit.load(pte, device="cuda")


def test_int8_by_the_xnnpack_quantizer_is_accuracy_gated(cnn_tf, pte, tmp_path):
    (r,) = modelkit.convert(cnn_tf, "executorch", out_dir=tmp_path, options={"quantize": "int8"})
    path = Path(r.path)
    assert path.name == "cnn_tf.int8.pte" and r.quantization == "int8"
    acc = r.accuracy
    assert acc["ok"] and acc["drop"] <= 0.01 and acc["samples"] > 100  # the digits test split, labelled
    m = json.loads(manifest_path(path).read_text())
    assert m["quantization"] == "int8" and m["extra"]["accuracy"]["ok"]
    assert path.stat().st_size < 0.8 * pte.stat().st_size  # int8 weights, not float ones folded back
    model = modelkit.load(path)
    x = np.random.default_rng(0).random((7, 8, 8, 1), dtype=np.float32)
    got, want = model.predict(x)["probs"], modelkit.load(pte).predict(x)["probs"]
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.85 and np.abs(got - want).max() < 0.2


def test_quantization_modes_named_for_executorch(cnn_tf, tmp_path):
    from modelkit.errors import UnsupportedConversionError

    with pytest.raises(UnsupportedConversionError, match="valid modes for executorch: none, int8"):
        modelkit.convert(cnn_tf, "executorch", out_dir=tmp_path, options={"quantize": "fp16"})


@pytest.mark.slow
def test_a_recurrent_layer_over_an_open_length_is_refused_naming_it_and_the_fix(tmp_path):
    """A recurrent layer runs unrolled in a .pte, over the length it was traced at: refused, naming the layer, the
    formats that keep the length open and the --input-spec that fixes it (other open lengths stay open:
    test_executorch_open_dims)."""
    from modelkit._backend import import_keras
    from modelkit.errors import UnsupportedConversionError

    keras = import_keras("tensorflow")

    x = keras.Input((None, 3), name="frames")
    y = keras.layers.GRU(4)(keras.layers.Conv1D(4, 3, padding="same")(x))
    src = tmp_path / "seq.keras"
    keras.Model(x, keras.layers.Dense(2, name="out")(y)).save(src)
    with pytest.raises(UnsupportedConversionError, match=r"dimension 1 of input 'frames' dynamic: layer .*GRU.*"
                                                         r"Formats that keep it dynamic: onnx, saved_model; or fix "
                                                         r"the size .*\(e\.g\. --input-spec frames:\?,64,3:float32\)"):
        modelkit.convert(src, "executorch", out_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "seq.pte").exists()
    # the fix it names works (at 6 steps rather than its example's 64: the GRU is unrolled, 64 steps cost a minute)
    (r,) = modelkit.convert(src, "executorch", out_dir=tmp_path / "out", input_spec=["frames:?,6,3:float32"])
    assert r.parity["ok"]


@pytest.mark.slow
def test_a_softmax_per_pixel_after_a_convolution_keeps_its_axis(tmp_path):
    """nc29's segmentation net failed parity (max abs error 1.0): XNNPACK left the convolution's output
    channels-last and ran the softmax over the wrong axis. A conv then softmax, and a slice between them."""
    from modelkit._backend import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same")(inp)
    heads = [keras.layers.Conv2D(3, 1, activation="softmax", name="mask")(inp),
             keras.layers.Softmax(name="sliced")(h[..., :3])]
    keras.Model(inp, heads).save(tmp_path / "seg.keras")
    (r,) = modelkit.convert(tmp_path / "seg.keras", "executorch", out_dir=tmp_path / "out")
    outputs = {o["name"]: o for o in r.parity["outputs"]}
    assert outputs["mask"]["max_abs"] <= 1e-5 and outputs["sliced"]["max_abs"] <= 1e-5


@pytest.mark.slow
def test_a_one_channel_convolution_converts(tmp_path):
    """nc31's denoising autoencoder failed lowering ("The same constant data tensor can't be used in NHWC format in
    one place and NCHW in another"): a one-output-channel kernel, folded from Keras' layout, was a view XNNPACK read
    as channels-last. nc170's 1-D denoiser failed at run time ("tensor_is_default_or_channels_last_dim_order(weight)"):
    its last Conv1D(1, 1) kernel was a view torch calls contiguous, with odd strides on its dimensions of size 1."""
    from modelkit._backend import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2), name="noisy")
    h = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu")(inp)
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="clean")(h)
    wave = keras.Input((None, 2), name="wave")  # at an open length: XNNPACK leaves that convolution to the runtime
    line = keras.layers.Conv1D(1, 1, name="line")(wave)
    keras.Model([inp, wave], [out, line]).save(tmp_path / "dae.keras")
    (r,) = modelkit.convert(tmp_path / "dae.keras", "executorch", out_dir=tmp_path / "out")
    assert r.parity["ok"] and max(o["max_abs"] for o in r.parity["outputs"]) <= 1e-5
    x = np.random.default_rng(0).random((3, 6, 6, 2), dtype=np.float32)
    feed = {"noisy": x, "wave": x.reshape(3, 36, 2)}
    got = modelkit.load(r.path).predict(feed)["clean"]
    want = modelkit.load(tmp_path / "dae.keras").predict(feed)["clean"]
    assert got.shape == (3, 12, 12, 1) and np.abs(got - want).max() <= 1e-5


@pytest.mark.slow
def test_attention_over_two_axes_converts(tmp_path):
    """nc174, self-attention over an image's grid (MultiHeadAttention, attention_axes=(1, 2)): its einsums permute
    tensors of 7 dimensions, which XNNPACK's partitioner took and XNNPACK cannot define; the program failed to load
    ("XNNCompiler: Failed to define tensor 10 with code: xnn_status_unsupported_parameter"). They run on ExecuTorch's
    portable kernels."""
    from modelkit._backend import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inp = keras.Input((5, 4, 6), name="grid")
    h = layers.MultiHeadAttention(num_heads=2, key_dim=4, attention_axes=(1, 2))(inp, inp)
    out = layers.Dense(3, name="scores")(layers.GlobalAveragePooling2D()(layers.Add()([inp, h])))
    keras.Model(inp, out).save(tmp_path / "axial.keras")
    (r,) = modelkit.convert(tmp_path / "axial.keras", "executorch", out_dir=tmp_path / "out")
    assert r.parity["ok"] and r.max_abs <= 1e-5
    x = np.random.default_rng(1).random((9, 5, 4, 6), dtype=np.float32)
    want = modelkit.load(tmp_path / "axial.keras").predict(x)["scores"]
    assert np.abs(modelkit.load(r.path).predict(x)["scores"] - want).max() <= 1e-5


@pytest.mark.slow
def test_an_upsampling_by_repetition_converts(tmp_path):
    """nc53's signal denoiser failed lowering ("Cannot view a tensor with shape [s33, 48, 2, 16] and strides (768, 1,
    0, 48) as (s33, 96, 16)"): Keras' torch UpSampling1D repeats by expand, clone and view, and the clone, taken for
    a layout-only copy, was dropped."""
    from modelkit._backend import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 1), name="signal")
    h = keras.layers.UpSampling1D(2)(keras.layers.Conv1D(4, 3, padding="same", activation="relu")(inp))
    out = keras.layers.Conv1D(1, 3, padding="same", name="denoised")(h)
    keras.Model(inp, out).save(tmp_path / "up.keras")
    (r,) = modelkit.convert(tmp_path / "up.keras", "executorch", out_dir=tmp_path / "out")
    x = np.random.default_rng(0).standard_normal((5, 12, 1)).astype(np.float32)
    got = modelkit.load(r.path).predict(x)["denoised"]
    want = modelkit.load(tmp_path / "up.keras").predict(x)["denoised"]
    assert got.shape == (5, 24, 1) and np.abs(got - want).max() <= 1e-5


@pytest.mark.slow
def test_a_model_rounding_to_whole_numbers_converts(tmp_path):
    """nc148's denoiser answering uint8 pixels (`ops.round` then a cast) failed lowering ("aten.round.decimals is not
    in Core ATen opset"): Keras' torch round passes decimals=0; it is torch.round(x) for the export now."""
    from modelkit._backend import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    inp = keras.Input((5,), name="x")
    scaled = keras.layers.Dense(4)(inp) * 40.0
    out = keras.ops.cast(keras.ops.clip(keras.ops.round(scaled) + 128.0, 0, 255), "uint8")
    keras.Model(inp, {"pixels": out, "rounded": keras.ops.round(scaled)}).save(tmp_path / "round.keras")
    (r,) = modelkit.convert(tmp_path / "round.keras", "executorch", out_dir=tmp_path / "out")
    x = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    got, want = modelkit.load(r.path).predict(x), modelkit.load(tmp_path / "round.keras").predict(x)
    assert got["pixels"].dtype == np.uint8
    np.testing.assert_array_equal(got["pixels"], want["pixels"])
    np.testing.assert_array_equal(got["rounded"], want["rounded"])


@pytest.mark.slow
def test_int8_of_a_model_with_an_embedding_keeps_its_index_arithmetic_integer(tmp_path):
    """nc43's wide-and-deep model (ids through an Embedding beside numeric features) could not be quantized: the
    XNNPACK quantizer makes every add's scalar a float32 constant, and Keras' wrap of negative ids
    (where(ids < 0, ids + n, ids)) handed the Embedding float indices."""
    from modelkit._backend import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 12, (400, 6)).astype(np.int32)
    num = rng.standard_normal((400, 2)).astype(np.float32)
    y = ((ids == 3).sum(1) + (num[:, 0] > 0) > 1).astype(np.int32)  # a keyword count and one numeric feature
    i_in, n_in = keras.Input((6,), dtype="int32", name="ids"), keras.Input((2,), name="num")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(12, 8)(i_in))
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([h, n_in]))
    model = keras.Model({"ids": i_in, "num": n_in}, keras.layers.Dense(2, activation="softmax", name="probs")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit({"ids": ids[:300], "num": num[:300]}, y[:300], epochs=30, verbose=0)
    model.save(tmp_path / "wd.keras")
    np.savez(tmp_path / "calib.npz", ids=ids[:100], num=num[:100])
    np.savez(tmp_path / "test.npz", ids=ids[300:], num=num[300:], y=y[300:])
    (r,) = modelkit.convert(tmp_path / "wd.keras", "executorch", out_dir=tmp_path / "out", quantize="int8",
                            calibration_data=tmp_path / "calib.npz", eval_data=tmp_path / "test.npz")
    assert r.quantization == "int8" and r.accuracy["ok"] and r.accuracy["source_accuracy"] > 0.8
    feed = {"ids": ids[300:310], "num": num[300:310]}
    got = modelkit.load(r.path).predict(feed)["probs"]
    assert (got.argmax(1) == model.predict(feed, verbose=0).argmax(1)).mean() >= 0.9


@pytest.mark.slow
def test_int8_of_a_causal_convolution_after_another_layer_loads(tmp_path):
    """nc45's keyword-spotting TCN (and ZeroPadding2D after a convolution, as in MobileNetV2) made int8 programs
    XNNPACK refused at load: the pad of a quantized tensor had an int8 input and a float output ("Failed to create
    StaticConstantPad node"), then the permute after it two scales. A pad now shares its input's quantization."""
    from modelkit._backend import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 20, 3)).astype(np.float32)
    y = (x[:, :, 0].cumsum(1)[:, -1] > 0).astype(np.int32)  # the sign of a running sum: needs the whole series
    inp = keras.Input((20, 3), name="series")
    h = keras.layers.Conv1D(8, 1)(inp)
    r = keras.layers.Conv1D(8, 3, padding="causal", dilation_rate=2, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Add()([h, r]))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="probs")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:300], y[:300], epochs=20, verbose=0)
    model.save(tmp_path / "tcn.keras")
    np.savez(tmp_path / "calib.npz", series=x[:100])
    np.savez(tmp_path / "test.npz", series=x[300:], y=y[300:])
    (r,) = modelkit.convert(tmp_path / "tcn.keras", "executorch", out_dir=tmp_path / "out", quantize="int8",
                            calibration_data=tmp_path / "calib.npz", eval_data=tmp_path / "test.npz")
    assert r.quantization == "int8" and r.accuracy["ok"] and r.accuracy["source_accuracy"] > 0.8
    got = modelkit.load(r.path).predict({"series": x[300:340]})["probs"]
    assert (got.argmax(1) == model.predict(x[300:340], verbose=0).argmax(1)).mean() >= 0.9


def test_a_program_xnnpack_refuses_at_load_names_the_runtime_s_reason():
    """ExecuTorch's exception gives a code only ("Failed to load method forward, error: 0x:1"); its log said which
    node XNNPACK refused (nc45's int8 TCN), and the LoadError now carries that line."""
    from modelkit.runtime.executorch import _why

    log = ("[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n"
           "[XNNCompiler.cpp:1262] Failed to create StaticConstantPad node 11 with code: xnn_status_invalid_parameter\n"
           "[XNNPACKBackend.cpp:143] XNNCompiler::compileModel failed: 0x1\n")
    assert _why([log]) == (" (XNNCompiler: Failed to create StaticConstantPad node 11 with code: "
                           "xnn_status_invalid_parameter)")
    assert _why([""]) == "" and _why([]) == ""
    # nc54: the only failing line was cpuinfo's, which every load may log: the code's meaning instead
    noise = "[cpuinfo_utils.cpp:53] Failed to open midr file /sys/devices/soc0/image_version\n"
    assert _why([noise], "Failed to load method forward, error: 0x:14") == (
        " (operator missing: the runtime has no kernel for an op the program runs outside its delegate)")
    assert _why([noise], "Failed to load method forward, error: 0x:1") == ""


def test_a_volumetric_model_is_refused_before_any_work_naming_the_formats_that_take_it(tmp_path):
    """nc54's 3-D segmenter lowered, then its program failed at load (no 3-D pooling kernel, error 0x14) and a Conv3D
    alone at its first run (error 0x12): refused before any work now, as RNNs are."""
    from modelkit._backend import import_keras

    keras = import_keras()
    inp = keras.Input((6, 6, 6, 1), name="volume")
    h = keras.layers.MaxPooling3D(2)(keras.layers.Conv3D(4, 3, padding="same")(inp))
    out = keras.layers.Dense(2, name="o")(keras.layers.GlobalAveragePooling3D()(h))
    keras.Model(inp, out).save(tmp_path / "v.keras")
    with pytest.raises(UnsupportedConversionError, match=r"v.keras: layer 'conv3d' \(Conv3D\) cannot be converted "
                                                         r"to executorch: it works on volumes \(3-D\).*formats that "
                                                         r"take it: onnx, saved_model, tflite, torchscript, pt2, tvm, "
                                                         r"openvino$"):
        modelkit.convert(tmp_path / "v.keras", "executorch", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
