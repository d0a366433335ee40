"""The line under the conversion table and the progress line that say why a route failed cut a long reason at a
word, with "...", not mid-word as if it ended there (was: "... which TFLite's builtin ops express only )")."""
from modelkit.converters.routes import clipped, describe

REASON = ("layer 'gru' (GRU) cannot be converted to tflite by the converter route: Keras' recurrent loop lowers to "
          "TensorList ops, which TFLite's builtin ops express only for a fixed batch and length, and modelkit keeps "
          "the batch dynamic; formats that convert it: onnx, saved_model (at any length), tflite by the unrolled "
          "route")


def test_a_long_reason_is_cut_at_a_word_and_says_so():
    short = clipped(REASON, 160)
    assert short.endswith(" ...") and len(short) <= 164
    assert REASON.startswith(short[:-4]) and REASON[len(short) - 4] == " "  # the cut falls before a space
    assert clipped("short reason", 160) == "short reason"
    line = describe({"taken": "unrolled", "tried": [{"route": "converter", "error": REASON}]})
    assert line.startswith("route 'unrolled' (converter failed: layer 'gru'") and line.endswith(" ...)")
