"""Child side of LoadWorker: reads one JSON request a line, loads (and inspects, and runs) the artifact,
answers one JSON line. Runs under RLIMIT_AS set by the parent; a native crash kills only this process."""
from __future__ import annotations

import json
import sys
import traceback
from typing import Callable

import numpy as np


def handle(req: dict) -> dict:
    import modelkit
    from modelkit.cli.inspect import describe
    from modelkit.errors import ModelkitError

    try:
        if req.get("inspect", True):
            describe(req["path"])
        m = modelkit.load(req["path"])
        feeds = req.get("feeds") or [None]
        for feed in feeds:
            if feed is None:
                inputs = {s.name: np.zeros(s.concrete_shape(1, 2), s.dtype) for s in m.signature.inputs}
            else:
                inputs = {k: np.asarray(v["data"], dtype=v["dtype"]).reshape(v["shape"]) for k, v in feed.items()}
            m.predict(inputs)
        return {"ok": True}
    except BaseException as exc:  # noqa: BLE001 - the point: report what escaped untyped
        return failure(exc, ModelkitError)


def failure(exc: BaseException, typed: type, message: int = 300, tb: int = 2000) -> dict:
    """The answer for an exception: typed (a modelkit error) or not, with its message and traceback cut."""
    if isinstance(exc, typed):
        return {"ok": False, "typed": True, "type": type(exc).__name__, "message": str(exc)[:message]}
    return {"ok": False, "typed": False, "type": type(exc).__name__, "message": str(exc)[:message],
            "traceback": traceback.format_exc()[-tb:]}


def main(handler: Callable[[dict], dict] = handle) -> None:
    """The protocol: READY, then one JSON answer a line for each JSON request a line on stdin."""
    out = sys.stdout
    sys.stdout = sys.stderr  # engines' chatter must not corrupt the protocol
    print("READY", file=out, flush=True)
    for line in sys.stdin:
        out.write(json.dumps(handler(json.loads(line))) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
