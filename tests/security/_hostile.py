"""Helpers shared by the hostile-file tests: rewriting zip members (a .keras config among them), a SavedModel
whose serving function writes a canary, and running code in a child process (optionally under an
address-space limit) so that a payload that does run, or an allocation that does happen, stays out of pytest."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]


def rewrite_zip(src: Path, dest: Path, replace: dict[str, bytes | Callable[[bytes], bytes]] | None = None,
                add: dict[str, bytes] | None = None) -> Path:
    """Copy a zip, replacing members (by full name, or by a name ending in the key) and adding others."""
    replace = dict(replace or {})
    hits = set()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.infolist():
            body = zin.read(item.filename)
            for key, new in replace.items():
                if item.filename == key or item.filename.endswith("/" + key):
                    body = new(body) if callable(new) else new
                    hits.add(key)
            zout.writestr(item, body)
        for name, body in (add or {}).items():
            zout.writestr(name, body)
    assert hits == set(replace), f"members not found: {set(replace) - hits}"
    return dest


def with_dense_activation(src: Path, dest: Path, activation: object) -> Path:
    """Copy a .keras zip, replacing its Dense layers' activation with `activation` in config.json."""
    def patch(data: bytes) -> bytes:
        cfg = json.loads(data)
        for layer in cfg["config"]["layers"]:
            if layer["class_name"] == "Dense":
                layer["config"]["activation"] = activation
        return json.dumps(cfg).encode()

    return rewrite_zip(src, dest, {"config.json": patch})


def serving_writer(folder: Path, canary: Path) -> Path:
    """A SavedModel whose serving function writes the canary (a real TF WriteFile op) on every call."""
    import tensorflow as tf

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            with tf.control_dependencies([tf.io.write_file(str(canary), "ran")]):
                return {"y": tf.identity(x)}

    w = Writer()
    tf.saved_model.save(w, str(folder), signatures={"serving_default": w.serve})
    return folder


def in_child(code: str, memory: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run Python code in a child (the project importable, TensorFlow quiet), optionally under RLIMIT_AS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "3",
           "TF_ENABLE_ONEDNN_OPTS": "0"}

    def limit() -> None:
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          preexec_fn=limit, cwd=ROOT)
