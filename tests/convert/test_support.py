"""Pre-conversion support checks: layers a format cannot represent are refused before any framework
runs, with a typed error naming the layer, the format and the reason. Each refused case was found by
trying it with the installed torch 2.13 / Keras 3.15 (see modelkit.converters.support.RULES)."""
import re
import time

import pytest

import modelkit
from modelkit.converters.support import check_support, iter_layers
from modelkit.errors import ConversionError, UnregisteredClassError, UnsupportedConversionError
from modelkit.formats import Format
from modelkit.keras_io.files import check_keras_archive


@pytest.fixture(scope="module")
def keras():
    from modelkit._backend import import_keras

    return import_keras("tensorflow")


def _save(keras, tmp_path, name, inputs, outputs):
    path = tmp_path / f"{name}.keras"
    keras.Model(inputs, outputs).save(path)
    return path


def test_trained_models_pass_every_format(cnn_tf, multi_io_jax):
    for src in (cnn_tf, multi_io_jax):
        for fmt in Format:
            check_support(src, fmt)  # no false positives on the zoo models
    names = {layer.name for layer in iter_layers(check_keras_archive(cnn_tf))}
    assert {"image", "block1_conv", "block3_bn", "gap", "probs"} <= names


def test_an_integer_lookup_is_refused_only_where_it_stays_a_table(keras, tmp_path):
    """An IntegerLookup is traced as comparisons (modelkit/converters/_lookup.py) and passes every format; an
    inverted one, one without an OOV index or with hashed OOV buckets keeps TF's hash table: SavedModel only."""
    x = keras.Input((5,), dtype="int64", name="ids")
    plain = _save(keras, tmp_path, "plain", x, keras.layers.IntegerLookup(vocabulary=[1, 2, 3], name="lookup")(x))
    for fmt in Format:
        check_support(plain, fmt)
    for i, kwargs in enumerate([{"invert": True}, {"num_oov_indices": 0},
                                {"num_oov_indices": 2, "oov_method": "farmhash"}]):
        src = _save(keras, tmp_path, f"kept{i}", x, keras.layers.IntegerLookup(vocabulary=[1, 2, 3], name="lookup",
                                                                               **kwargs)(x))
        for fmt in ("torchscript", "pt2"):
            with pytest.raises(UnsupportedConversionError,
                               match=rf"layer 'lookup' \(IntegerLookup\) cannot be converted to {fmt}: runs "
                                     r"through TensorFlow lookup/hash ops.*except with invert=True, num_oov_indices=0"
                                     ".*; formats that take it: saved_model$"):
                check_support(src, fmt)
        for fmt, why in (("onnx", "tf2onnx maps to no standard ONNX op"), ("tflite", "is no TFLite builtin op"),
                         ("tvm", "TVM compiles the ONNX model"), ("openvino", "OpenVINO converts the ONNX model")):
            table = rf"\(IntegerLookup\) cannot be converted to {fmt}: it looks values up in a TensorFlow hash table"
            with pytest.raises(UnsupportedConversionError, match=rf"{table}.*{why}"):
                check_support(src, fmt)
        check_support(src, Format.SAVED_MODEL)


def test_refusal_crosses_the_child_process_typed_and_before_any_work(keras, tmp_path):
    x = keras.Input((4,), dtype="int64", name="ids")
    src = _save(keras, tmp_path, "hash", x, keras.layers.Hashing(7, name="hash")(x))
    t0 = time.perf_counter()
    with pytest.raises(UnsupportedConversionError, match=r"layer 'hash' \(Hashing\) cannot be converted to pt2"):
        modelkit.convert(src, "pt2", out_dir=tmp_path)
    assert time.perf_counter() - t0 < 20  # refused from config.json, not after a failed export
    assert not list(tmp_path.glob("hash.pt2*")) and not list(tmp_path.glob(".*partial"))
    assert issubclass(UnsupportedConversionError, ConversionError)


def test_masked_rnn_is_refused_by_the_pt2_export_route_only(keras, tmp_path):
    x = keras.Input((6,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(20, 4, mask_zero=True, name="embed")(x)
    src = _save(keras, tmp_path, "masked", x, keras.layers.SimpleRNN(3, name="rnn")(h))
    with pytest.raises(UnsupportedConversionError,
                       match=r"layer 'rnn' \(SimpleRNN\) cannot be converted to pt2: it consumes a mask .*iterates "
                             r"over the batch .*fixes the batch size .*; routes of pt2 that take it: unrolled; formats "
                             "that take it: onnx, saved_model, tflite, torchscript, executorch, tvm, openvino$"):
        check_support(src, "pt2", route="export")
    check_support(src, "pt2")  # the 'unrolled' route takes it (tests/convert/test_routes.py converts it)
    check_support(src, "pt2", route="unrolled")
    check_support(src, "torchscript")
    x2 = keras.Input((6,), dtype="int32", name="tokens")  # the same RNN without a mask is fine
    h2 = keras.layers.Embedding(20, 4, name="embed")(x2)
    check_support(_save(keras, tmp_path, "unmasked", x2, keras.layers.SimpleRNN(3, name="rnn")(h2)), "pt2")


@pytest.mark.parametrize("layer, scanned", [("GRU", True), ("BiLSTM", True), ("GRU_reset_before", False),
                                            ("LSTM_relu", False)])
def test_a_masked_lstm_or_gru_with_standard_gates_is_left_to_the_export_route(keras, tmp_path, layer, scanned):
    """torch.export runs a masked LSTM / GRU with tanh / sigmoid gates as torch's scan (converters/_torch_rnn.py);
    other gates or GRU(reset_after=False) keep Keras' masked loop and are refused by the export route."""
    L = keras.layers
    rnn = {"GRU": lambda: L.GRU(3, name="rnn"), "BiLSTM": lambda: L.Bidirectional(L.LSTM(3), name="rnn"),
           "GRU_reset_before": lambda: L.GRU(3, reset_after=False, name="rnn"),
           "LSTM_relu": lambda: L.LSTM(3, activation="relu", name="rnn")}[layer]()
    x = keras.Input((6,), dtype="int32", name="tokens")
    src = _save(keras, tmp_path, layer.lower(), x, rnn(L.Embedding(20, 4, mask_zero=True, name="embed")(x)))
    if scanned:
        check_support(src, "pt2", route="export")
    else:
        with pytest.raises(UnsupportedConversionError, match=r"layer 'rnn' \(\w+\) cannot be converted to pt2: it "
                                                             "consumes a mask"):
            check_support(src, "pt2", route="export")


def test_string_inputs_are_refused_for_torch_formats(keras, tmp_path):
    x = keras.Input((1,), dtype="string", name="text")
    src = _save(keras, tmp_path, "strings", x, keras.layers.StringLookup(vocabulary=["a", "b"], name="vocab")(x))
    with pytest.raises(UnsupportedConversionError, match=r"layer '\w+' \(\w+\) cannot be converted to "
                                                         r"torchscript: .*torch has no string tensors"):
        check_support(src, Format.TORCHSCRIPT)


@pytest.mark.slow
def test_unregistered_custom_layer_is_refused_for_every_format(keras, tmp_path):
    @keras.saving.register_keras_serializable(package="my_pkg")
    class MyLayer(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    x = keras.Input((4,), name="features")
    src = _save(keras, tmp_path, "custom", x, keras.layers.Dense(2, name="probs")(MyLayer(name="x")(x)))
    check_support(src, Format.ONNX)  # registered in this process: Keras can rebuild it here
    msg = (r"layer 'x' of class 'my_pkg>MyLayer' is not registered; register it with "
           r"keras.saving.register_keras_serializable")
    with pytest.raises(UnsupportedConversionError, match=msg):
        modelkit.convert(src, "torchscript", out_dir=tmp_path)  # the child never imported my_pkg
    # several formats, several routes each: the cause is said once, typed, and no other route is tried
    with pytest.raises(UnregisteredClassError) as info:
        modelkit.convert(src, "onnx,tflite", out_dir=tmp_path)
    text = str(info.value)
    assert text.startswith("2 of 2 formats failed (written: nothing) | onnx, tflite: ") and "route" not in text
    assert text.count("is not registered") == 1
    keras.saving.get_custom_objects().pop("my_pkg>MyLayer")
    try:
        for fmt in Format:
            with pytest.raises(UnsupportedConversionError, match=msg):
                check_support(src, fmt)
    finally:
        keras.saving.get_custom_objects()["my_pkg>MyLayer"] = MyLayer


def test_a_stateful_rnn_is_refused_before_any_work_saying_how_to_stream(keras, tmp_path):
    """nc27: a stateful GRU (batch 1) failed every format after tracing, with Keras' "If an RNN is stateful, the
    batch size of the input sequences must be the same ..." (and its terminal's bold escape codes)."""
    frames = keras.Input((10, 6), batch_size=1, name="frames")
    src = _save(keras, tmp_path, "stateful", frames,
                keras.layers.Dense(3, name="scores")(keras.layers.GRU(8, stateful=True, name="gru")(frames)))
    for fmt in ("onnx", "saved_model", "tflite", "pt2"):
        with pytest.raises(UnsupportedConversionError, match=rf"layer 'gru' \(GRU\) cannot be converted to {fmt}: it "
                                                             r"is stateful \(stateful=True\).*return_state=True.*"
                                                             r"formats that take it: none$"):
            check_support(src, Format.parse(fmt))
    with pytest.raises(UnsupportedConversionError) as info:  # several formats: the refusal said once (nc89)
        modelkit.convert(src, "onnx,tflite,pt2", out_dir=tmp_path / "out")
    assert re.match(r"3 of 3 formats failed \(written: nothing\) \| onnx, tflite, pt2: \S*stateful.keras: layer 'gru' "
                    r"\(GRU\) cannot be converted to any of them: it is stateful", str(info.value)), info.value
    assert str(info.value).count("is stateful") == 1 and info.value.failures["pt2"].count("converted to pt2:") == 1
    streaming = keras.layers.GRU(8, return_state=True, name="gru")  # the recipe the message gives converts
    state = keras.Input((8,), name="state")
    seq, new_state = streaming(frames, initial_state=state)
    src = _save(keras, tmp_path, "streaming", [frames, state], [keras.layers.Dense(3, name="scores")(seq), new_state])
    for fmt in Format:
        if fmt not in (Format.KERAS, Format.EXECUTORCH):
            check_support(src, fmt)
