"""modelkit._quiet: an engine's native and Python chatter stays out of the terminal for the block only."""
import os
import sys

import pytest

from modelkit._quiet import engine_chatter_swallowed


def test_native_and_python_output_are_swallowed_for_the_block_only(capfd):
    with pytest.raises(RuntimeError, match="boom"):
        with engine_chatter_swallowed():
            os.write(2, b"loc(callsite(...)): error: native\n")  # what MLIR / TVM's C++ write
            print("Error converting operator Reshape")  # what TVM's Python importer prints
            raise RuntimeError("boom")
    os.write(2, b"after\n")
    print("visible", file=sys.stdout)
    out, err = capfd.readouterr()
    assert "native" not in err and "Reshape" not in out
    assert err == "after\n" and out == "visible\n"


def test_a_stderr_sink_keeps_each_blocks_native_output_apart_and_its_file_empty(capfd):
    from modelkit._quiet import StderrSink

    sink = StderrSink()
    with sink.swallowed() as said:
        pass
    assert said == []  # nothing written: nothing read
    with pytest.raises(RuntimeError, match="boom"):
        with sink.swallowed() as said:
            os.write(2, b"[tensor_impl.cpp:1] Attempted to resize\n")
            raise RuntimeError("boom")
    assert said == ["[tensor_impl.cpp:1] Attempted to resize\n"]
    with sink.swallowed() as said:
        os.write(2, b"second\n")
    assert said == ["second\n"]  # this block's output only: the file was emptied after the last
    assert os.fstat(sink._file.fileno()).st_size == 0
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
