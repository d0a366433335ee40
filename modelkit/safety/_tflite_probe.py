"""Child side of modelkit.safety.tflite.probe: run as a script (`python -P _tflite_probe.py MEMORY CPU_S`),
never imported, importing nothing of modelkit. Reads a .tflite from stdin under RLIMIT_AS / RLIMIT_CPU, then
does what the litert engine and a first predict do: build the interpreter, allocate, read every signature,
invoke on zeros (again at batch 2 when the batch is dynamic). Writes one line `MODELKIT-PROBE {json}`.
A native crash kills only this process; the parent reports its signal."""
import gc
import json
import os
import sys


def _limit(kind: str, soft: int, slack: int = 0) -> None:
    """Lower the soft and hard limits (the hard one too: native code cannot raise it back). A platform
    without the limit (macOS has no working RLIMIT_AS) still gets the process isolation."""
    try:
        import resource

        which = getattr(resource, kind)
        hard = resource.getrlimit(which)[1]
        cap = (lambda v: v) if hard == resource.RLIM_INFINITY else (lambda v: min(v, hard))
        resource.setrlimit(which, (cap(soft), cap(soft + slack)))
    except (ImportError, AttributeError, ValueError, OSError):
        pass


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL (Linux)
    except (OSError, AttributeError):
        pass


def probe(data: bytes) -> dict:
    stage = "import"
    try:
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter

        stage = "open"
        it = Interpreter(model_content=data, num_threads=1)
        ins = it.get_input_details()
        open_dims = any(-1 in list(d["shape_signature"])[1:] for d in ins)
        for rows in (None, 2):
            if rows:
                dynamic = [d for d in ins if len(d["shape_signature"]) and d["shape_signature"][0] == -1]
                if not dynamic:
                    break
                for d in dynamic:
                    it.resize_tensor_input(d["index"], [rows, *d["shape"][1:]])
            stage = "allocate"
            try:
                it.allocate_tensors()
            except (RuntimeError, ValueError):  # dynamic non-batch dims: the engine allocates at the first call
                if not (rows is None and open_dims):
                    raise
            if rows is None:
                stage = "signatures"
                for key in it.get_signature_list():
                    runner = it.get_signature_runner(key)
                    runner.get_input_details(), runner.get_output_details()
                    del runner  # a live runner forbids allocate_tensors
                gc.collect()
            if open_dims or any(np.dtype(d["dtype"]).kind in "OSUV" for d in ins):
                break
            stage = "invoke"
            for d in it.get_input_details():
                it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
            it.invoke()
            for d in it.get_output_details():
                it.get_tensor(d["index"])
        return {"ok": True}
    except MemoryError:
        return {"ok": False, "stage": stage, "memory": True}
    except Exception as exc:  # noqa: BLE001 - a clean refusal; the engine raises it again, typed
        return {"ok": False, "stage": stage, "error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}


if __name__ == "__main__":
    _limit("RLIMIT_AS", int(sys.argv[1]))
    _limit("RLIMIT_CPU", int(sys.argv[2]), slack=5)  # SIGXCPU, then SIGKILL
    _limit("RLIMIT_CORE", 0)
    _die_with_parent()
    result = probe(sys.stdin.buffer.read())
    sys.stdout.write("\nMODELKIT-PROBE " + json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown
