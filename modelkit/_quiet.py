"""Keep an engine's own diagnostics out of the user's terminal while modelkit handles its failure."""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from typing import Iterator


@contextlib.contextmanager
def engine_chatter_swallowed() -> Iterator[list[str]]:
    """For the block: file descriptor 2 goes to a scratch file (native diagnostics: the TFLite converter's MLIR
    `loc(callsite(...))` lines, TVM's C++ warnings) and Python's sys.stdout to a buffer (TVM's importer prints
    the operator it failed on). The exception the engine raises carries what matters, and modelkit turns it
    into one typed line; a first route's failure is an expected hand-over, not something to read. Yields a list
    that holds, once the block is left, what went to descriptor 2 (for an engine whose exception says less than
    its log: ExecuTorch's "error: 0x:1")."""
    sys.stderr.flush()
    saved = os.dup(2)
    said: list[str] = []
    try:
        with tempfile.TemporaryFile() as scratch, contextlib.redirect_stdout(io.StringIO()):
            os.dup2(scratch.fileno(), 2)
            try:
                yield said
            finally:
                os.dup2(saved, 2)
                scratch.seek(0)
                said.append(scratch.read(1 << 16).decode(errors="replace"))
    finally:
        os.close(saved)
