"""One-line messages made from engines' errors (modelkit.errors.first_line)."""
from modelkit.errors import first_line


def test_keras_reason_joins_its_first_line_without_terminal_escape_codes():
    """Keras writes the reason of "Exception encountered when calling X.call()" in bold: the escape codes
    reached modelkit's one-line errors as '[1m' (nc27, a stateful GRU)."""
    exc = ValueError("Exception encountered when calling GRU.call().\n\n\x1b[1mIf an RNN is stateful, the batch "
                     "size must match.\x1b[0m\n\nArguments received ...")
    assert first_line(exc) == "Exception encountered when calling GRU.call(). If an RNN is stateful, the batch " \
                              "size must match."
    assert first_line(RuntimeError("")) == "RuntimeError"
