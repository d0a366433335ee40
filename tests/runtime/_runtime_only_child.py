"""Child side of tests/runtime/test_runtime_only.py, run by the python of a venv that holds only modelkit's core
dependencies and one runtime-only extra (nothing of the test suite is importable there): load each artifact and
predict on X; load each hostile file, which must be refused with a typed error; say which of the named packages
could be imported. Prints one line, `RESULT {json}`.

    python -I -B _runtime_only_child.py '{"x": [[...]], "artifacts": [...], "hostile": [...], "absent": [...]}'
"""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np


def main(spec: dict) -> dict:
    import modelkit

    x = np.asarray(spec["x"], np.float32)
    out: dict = {"predict": {}, "refused": {}}
    for path in spec["artifacts"]:
        model = modelkit.load(path)
        out["predict"][path] = {"engine": model.engine, "probs": model.predict({"x": x})["probs"].tolist()}
    for path in spec["hostile"]:
        try:
            modelkit.load(path).predict({"x": x})
            out["refused"][path] = None
        except modelkit.ModelkitError as exc:
            out["refused"][path] = [type(exc).__name__, str(exc)]
    out["importable"] = [name for name in spec["absent"] if importlib.util.find_spec(name) is not None]
    out["imported"] = sorted({name.split(".")[0] for name in sys.modules} & set(spec["absent"]))
    out["modelkit"] = modelkit.__file__
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(json.loads(sys.argv[1]))), flush=True)
