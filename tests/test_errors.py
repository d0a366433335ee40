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


def test_openvino_source_locations_give_way_to_the_reason():
    exc = RuntimeError("Exception from src/inference/src/cpp/core.cpp:84:\nException from src/core/xml_util/src/"
                       "xml_deserialize_util.cpp:1286:\nOpset opset1 doesn't contain the operation with type: X\n\n")
    assert first_line(exc) == "Opset opset1 doesn't contain the operation with type: X"
    assert first_line(RuntimeError("Exception from src/a.cpp:1:")) == "Exception from src/a.cpp:1:"  # nothing else


def test_a_line_that_introduces_what_follows_keeps_it():
    """TVM's LLVM verifier (nc90): "tvm.compile failed for llvm: InternalError: LLVM module verification failed with
    the following errors:" said nothing of the error."""
    exc = RuntimeError("LLVM module verification failed with the following errors:\nInvalid operand types for FCmp "
                       "instruction\n  %5 = fcmp olt i32 %4, %3\n")
    assert first_line(exc) == ("LLVM module verification failed with the following errors: Invalid operand types for "
                               "FCmp instruction")
    alone = "Check failed: (x == nullptr) is false:"
    assert first_line(RuntimeError(alone)) == alone
