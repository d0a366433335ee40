"""The child side of modelkit._child: the entry point a child process runs (`python -m modelkit._child_side`).

`OUT`: run the one function the parent sends on stdin, write {"result"} or {"error"} as JSON to OUT.
`--serve FD`: build one object, then answer one JSON reply line on FD per request line on stdin (modelkit._child.serve).
Either way the child first dies with its parent and quiets the root logger, and ends with os._exit (no teardown).
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from ._child_errors import error_payload


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies, so killing `modelkit convert` stops its work too
    (an orphaned child would otherwise finish and write the artifact the user interrupted)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def as_child() -> None:
    """What every child entry point does first: die with its parent, and keep libraries' root-logger advice
    (which drowns the progress lines) quiet."""
    _die_with_parent()
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "jax":  # what Keras' import costs for nothing (_backend.py)
        from ._backend import skip_jax_at_keras_import

        skip_jax_at_keras_import()
    import logging

    logging.getLogger().setLevel(logging.ERROR)


def _main(out_path: str) -> int:
    as_child()
    req = json.loads(sys.stdin.read())
    mod_name, fn_name = req["func"].split(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
        payload: dict[str, Any] = {"result": fn(**req["kwargs"])}
    except BaseException as exc:  # report every failure to the parent, typed
        payload = {"error": error_payload(exc)}
    Path(out_path).write_text(json.dumps(payload, default=str))
    return 0


def _serve(fd: int) -> int:
    """The child side of serve(): build the object from the first stdin line, then answer one reply line on
    `fd` per request line until stdin ends. Every failure is a reply, so the object keeps serving."""
    as_child()
    out = os.fdopen(fd, "w", encoding="utf-8")

    def reply(payload: dict[str, Any]) -> None:
        out.write(json.dumps(payload, default=str) + "\n")
        out.flush()

    req = json.loads(sys.stdin.readline())
    mod_name, fn_name = req["func"].split(":")
    try:
        obj = getattr(importlib.import_module(mod_name), fn_name)(**req["kwargs"])
    except BaseException as exc:
        reply({"error": error_payload(exc)})
        return 0
    reply({"result": None})
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["method"].startswith("_"):
                raise AttributeError(f"{req['method']} is private")
            reply({"result": getattr(obj, req["method"])(**req["kwargs"])})
        except BaseException as exc:
            reply({"error": error_payload(exc)})
    return 0


if __name__ == "__main__":
    code = _serve(int(sys.argv[2])) if sys.argv[1] == "--serve" else _main(sys.argv[1])
    # The result file is written and closed; skip interpreter teardown (TensorFlow's shutdown alone
    # costs ~3 s per conversion child). Flush what the child printed first.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
