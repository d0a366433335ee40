"""Ctrl-C during training, taken where the training loop can stop cleanly.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives. Raised inside TensorFlow's
conversion of a Python sequence to a tensor (Keras resets its metrics that way as each epoch starts), it crashed
the process with SIGSEGV (TensorFlow 2.21: about one Ctrl-C in ten in `modelkit train`, the checkpoint lost).
While `deferred(keras)` is active, the first Ctrl-C only records the request and says so; the Keras callback it
yields raises KeyboardInterrupt at the next batch or epoch boundary, in Python, and leaving the block raises it if
the request came after the last one. A second Ctrl-C raises at once (the user insists). The handler is installed
as TVM tuning's is (modelkit._sigint.handling: main thread only, an ignored SIGINT stays ignored).
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from .. import _sigint

NOTICE = ("[modelkit] Ctrl-C: stopping at the end of this batch to save a checkpoint "
          "(Ctrl-C again to stop at once)")


@contextlib.contextmanager
def deferred(keras: Any) -> Iterator[Any]:
    """Take Ctrl-C at the training loop's next boundary; yields the Keras callback to pass to fit()."""
    requested: list[bool] = []

    def on_sigint(signum: int, frame: Any) -> None:
        if requested:
            raise KeyboardInterrupt
        requested.append(True)
        print(NOTICE, file=sys.stderr, flush=True)

    def stop_if_requested(*args: Any, **kwargs: Any) -> None:
        if requested:
            raise KeyboardInterrupt

    class StopOnCtrlC(keras.callbacks.Callback):
        on_train_batch_end = on_test_batch_end = on_epoch_begin = on_epoch_end = staticmethod(stop_if_requested)

    with _sigint.handling(on_sigint):
        yield StopOnCtrlC()
    stop_if_requested()
