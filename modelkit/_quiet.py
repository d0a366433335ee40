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
    sink = StderrSink()
    try:
        with sink.swallowed() as said, contextlib.redirect_stdout(io.StringIO()):
            yield said
    finally:
        sink.close()


class StderrSink:
    """Descriptor 2 sent to a scratch file for a block (engine_chatter_swallowed's, with one sink per block), cheap
    enough to keep for every call of an engine (ExecuTorch's execute, which logs only when it fails): the file is
    opened once, read only when something was written, then emptied.
    A new scratch file per call cost 20-50 us, more than a small program's whole run. Python's stdout is left alone."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()

    @contextlib.contextmanager
    def swallowed(self) -> Iterator[list[str]]:
        """Descriptor 2 goes to the scratch file for the block; the list holds what it got, once the block is left."""
        said: list[str] = []
        sys.stderr.flush()
        fd = self._file.fileno()
        saved = os.dup(2)
        try:
            os.dup2(fd, 2)
            try:
                yield said
            finally:
                os.dup2(saved, 2)
                if os.lseek(fd, 0, os.SEEK_END):  # something was written: read it, empty the file
                    os.lseek(fd, 0, os.SEEK_SET)
                    said.append(os.read(fd, 1 << 16).decode(errors="replace"))
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, os.SEEK_SET)
        finally:
            os.close(saved)

    def close(self) -> None:
        self._file.close()
