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
