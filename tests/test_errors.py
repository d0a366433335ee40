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


def test_torch_exports_boilerplate_gives_way_to_the_errors_name():
    """nc98: torch.export's GuardOnDataDependentSymNode said only "The error above occurred when calling
    torch.export.export. If you would like to view ...", which became the whole one-line error."""
    class GuardOnDataDependentSymNode(RuntimeError):
        pass

    tail = ("The error above occurred when calling torch.export.export. If you would like to view some more "
            "information about this error, and get a list of all other errors that may occur in your export call, "
            "you can replace your `export()` call with `draft_export()`.")
    assert first_line(GuardOnDataDependentSymNode(f"\n\n{tail}")) == "GuardOnDataDependentSymNode"
    assert first_line(RuntimeError(f"Constraints violated (batch)!\n\n{tail}")) == "Constraints violated (batch)!"


def test_a_class_keras_cannot_rebuild_is_named_with_its_own_error():
    """nc98: RandomShear's get_config writes x_factor as [-0.1, 0.1], which its from_config refuses; Keras' error
    starts with the outermost class ("Functional could not be deserialized properly. Please ensure ...")."""
    import keras

    from modelkit.keras_io.files import _keras_reason

    exc = TypeError(
        "<class 'keras.src.models.functional.Functional'> could not be deserialized properly. Please ensure ...\n\n"
        "config={'class_name': 'Functional'}.\n\nException encountered: <class 'keras.src.layers.preprocessing."
        "image_preprocessing.random_shear.RandomShear'> could not be deserialized properly. Please ensure ...\n\n"
        "config={'class_name': 'RandomShear'}.\n\nException encountered: Error when deserializing class "
        "'RandomShear' using config={'x_factor': [-0.1, 0.1]}.\n\nException encountered: The `factor` argument "
        "should be a number (or a list of two numbers) in the range [0, 1.0]. Received: input_number=-0.1")
    assert _keras_reason(exc, keras) == ("it could not rebuild RandomShear from its saved config: The `factor` "
                                         "argument should be a number (or a list of two numbers) in the range "
                                         "[0, 1.0]. Received: input_number=-0.1")
    plain = TypeError("<class 'x.Y'> could not be deserialized properly.")  # nothing under it: Keras' line
    assert _keras_reason(plain, keras) == "<class 'x.Y'> could not be deserialized properly."
