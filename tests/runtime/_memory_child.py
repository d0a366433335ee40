"""Child side of tests/runtime/test_memory.py: load an artifact, run it once on a small batch (so the engine's
threads, caches and compiled code exist), then cap this process's address space (RLIMIT_AS) at what it has
mapped plus HEADROOM bytes and run it on an input of INPUT_BYTES. Prints one JSON line saying what
predict raised (or load: with --load-after, a small artifact of the same engine is loaded first and PATH
is loaded under the cap). A native crash kills only this process; the parent sees the signal.

    python -m tests.runtime._memory_child PATH INPUT_BYTES HEADROOM [--load-after WARM_UP_PATH]
"""
from __future__ import annotations

import json
import resource
import sys

import numpy as np


def mapped_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def cap_address_space(headroom: int) -> None:
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (mapped_bytes() + headroom, hard))


def main(path: str, input_bytes: int, headroom: int, warm_up_path: str | None) -> dict:
    """Predict on INPUT_BYTES under the cap; with warm_up_path, load that (small) artifact first to start
    the engine, then load PATH under the cap."""
    import modelkit
    from modelkit.errors import ModelkitError

    if warm_up_path is None:
        model = modelkit.load(path)
        spec = model.signature.inputs[0]
        row = int(np.prod(spec.concrete_shape(1))) * np.dtype(spec.dtype).itemsize
        model.predict(np.ones(spec.concrete_shape(2), spec.dtype))
        x = np.ones(spec.concrete_shape(input_bytes // row), spec.dtype)
    else:
        modelkit.load(warm_up_path)
    cap_address_space(headroom)
    try:
        if warm_up_path is None:
            model.predict({spec.name: x})
        else:
            modelkit.load(path)
        return {"raised": None}
    except ModelkitError as exc:
        return {"raised": type(exc).__name__, "typed": True, "message": str(exc)}
    except BaseException as exc:  # noqa: BLE001 - the point: report what escaped untyped
        return {"raised": type(exc).__name__, "typed": False, "message": str(exc)[:2000]}


if __name__ == "__main__":
    out = sys.stdout
    sys.stdout = sys.stderr  # engines' chatter must not corrupt the answer
    args = sys.argv[1:]
    result = main(args[0], int(args[1]), int(args[2]), args[4] if args[3:4] == ["--load-after"] else None)
    out.write(json.dumps(result) + "\n")
    out.flush()
