"""Recurrent layers to ExecuTorch are refused from config.json, naming the layer and the formats that take it: the
export and XNNPACK lowering succeeded and the program then failed at its first run ("method->execute() failed
with error 0x10", LSTM / GRU; SimpleRNN's export fixed the batch), after minutes of work (111 s for a Conv1D-GRU
classifier on 2 cores)."""
import time

import pytest

import modelkit
from modelkit.converters.support import check_support
from modelkit.errors import UnsupportedConversionError


@pytest.fixture(scope="module")
def keras():
    from modelkit._backend import import_keras

    return import_keras("tensorflow")


@pytest.mark.parametrize("layer", ["LSTM", "GRU", "SimpleRNN", "ConvLSTM2D"])
def test_a_recurrent_layer_to_executorch_is_refused_before_any_work(keras, tmp_path, layer):
    """ConvLSTM2D (nc30's clip classifier) failed torch.export after tracing ("Constraints violated (batch)")."""
    if layer == "ConvLSTM2D":
        x = keras.Input((4, 6, 6, 1), name="x")
        rnn = keras.layers.ConvLSTM2D(4, 3, name="rnn")
        head = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(2)], name="head")
    else:
        x = keras.Input((8, 3), name="x")
        rnn = getattr(keras.layers, layer)(4, name="rnn")
        head = keras.layers.Dense(2, name="head")
    src = tmp_path / f"{layer}.keras"
    keras.Model(x, head(rnn(x))).save(src)
    with pytest.raises(UnsupportedConversionError,
                       match=rf"layer 'rnn' \({layer}\) cannot be converted to executorch: ExecuTorch's runtime fails "
                             r"running the recurrent loop .*; formats that take it: onnx, saved_model, tflite, "
                             "torchscript, pt2, tvm, openvino$"):
        check_support(src, "executorch")
    for fmt in ("onnx", "torchscript", "pt2"):
        check_support(src, fmt)
    if layer == "GRU":  # through convert(): typed, from config.json, nothing written
        t0 = time.perf_counter()
        with pytest.raises(UnsupportedConversionError, match=r"\(GRU\) cannot be converted to executorch"):
            modelkit.convert(src, "executorch", out_dir=tmp_path / "out")
        assert time.perf_counter() - t0 < 20
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
