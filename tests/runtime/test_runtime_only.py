"""A runtime-only extra is enough: `modelkit.load(path).predict(x)` works in a venv that holds only modelkit's
core dependencies and one `run-*` extra (pyproject.toml), and the converters and other frameworks cannot even be
imported there.

The venv is built offline from this environment (tests/helpers/extras.py): the extra's requirements are resolved
through the installed packages' metadata, and exactly those distributions are symlinked into a venv made without
pip, with this checkout's `modelkit` package. The artifacts are made here beforehand; the venv's python loads them
(tests/runtime/_runtime_only_child.py), compares the outputs with numpy's, and loads hostile files, which the
safety checks must still refuse without the converter packages (ONNX external data outside the model's folder
without the `onnx` package; a TFLite signature naming a subgraph that does not exist).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import make_tiny_onnx
from tests.helpers.extras import MissingDistribution, make_venv, requirements, resolve
from tests.security._build import expected, weights

CHILD = Path(__file__).with_name("_runtime_only_child.py")
X = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
# importable nowhere in a runtime-only venv but the engine of its own extra
ENGINE_MODULES = {"run-onnx": "onnxruntime", "run-tflite": "ai_edge_litert", "run-torch": "torch", "run-tvm": "tvm"}
CONVERTERS = ["onnx", "onnxscript", "onnxslim", "onnx_ir", "tf2onnx", "tensorflow", "keras", "jax", "sklearn",
              "torchserve", "playwright", "keras_tuner"]


def runtime_venv(extra: str, folder: Path) -> Path:
    """The python of a venv holding the core dependencies, `extra` and this checkout's modelkit, nothing else."""
    try:
        dists = resolve(requirements(extra))
    except MissingDistribution as exc:
        pytest.skip(f"modelkit[{extra}] is not installed in this environment ({exc})")
    return make_venv(folder, dists)


def run_child(python: Path, extra: str, artifacts: list[Path], hostile: list[Path], cache: Path) -> dict:
    absent = CONVERTERS + [m for e, m in ENGINE_MODULES.items() if e != extra]
    spec = {"x": X.tolist(), "artifacts": [str(p) for p in artifacts], "hostile": [str(p) for p in hostile],
            "absent": absent}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "MODELKIT_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "OMP_NUM_THREADS": "1", "TVM_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # -I: no PYTHONPATH, no user site, not the current folder; -B: nothing written into the linked packages
    proc = subprocess.run([str(python), "-I", "-B", str(CHILD), json.dumps(spec)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cache)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["modelkit"].startswith(str(python.parents[1])), result["modelkit"]  # the venv's link, not ours
    return result


def check(result: dict, artifacts: list[Path], engines: list[str]) -> None:
    assert result["importable"] == [] and result["imported"] == [], result
    for path, engine in zip(artifacts, engines):
        got = result["predict"][str(path)]
        assert got["engine"] == engine
        np.testing.assert_allclose(np.asarray(got["probs"]), expected(X), atol=1e-5)


def test_the_venv_holds_nothing_else(tmp_path):
    """The isolation is real: packages installed here (onnx, keras) are absent from the runtime-only venv."""
    if any(importlib.util.find_spec(n) is None for n in ("onnx", "keras", "onnxruntime")):
        pytest.skip("needs onnx, keras and onnxruntime installed here")
    python = runtime_venv("run-onnx", tmp_path / "venv")
    names = ("onnx", "keras", "onnxruntime", "numpy")
    probe = f"import importlib.util as u; print([n for n in {names!r} if u.find_spec(n)])"
    out = subprocess.run([str(python), "-I", "-B", "-c", probe], capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ.get("PATH", "")}, cwd=tmp_path)
    assert out.stdout.strip() == "['onnxruntime', 'numpy']", out.stderr[-2000:]


def _onnx_outside_folder(folder: Path) -> Path:
    """tiny.onnx whose weight W is external data at '../secret/weights.bin' (outside the model's folder)."""
    import onnx
    from onnx import TensorProto

    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(make_tiny_onnx(folder / "src.onnx")))
    w = next(t for t in model.graph.initializer if t.name == "W")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    entry = w.external_data.add()
    entry.key, entry.value = "location", "../secret/weights.bin"
    onnx.save(model, str(folder / "outside.onnx"))
    return folder / "outside.onnx"


def test_run_onnx_alone(tmp_path):
    pytest.importorskip("onnx")  # to build the files here
    pytest.importorskip("ai_edge_litert")
    python = runtime_venv("run-onnx", tmp_path / "venv")
    tiny = make_tiny_onnx(tmp_path / "tiny.onnx")
    hostile = _onnx_outside_folder(tmp_path / "hostile")
    other = build_tiny_tflite(tmp_path / "tiny.tflite")  # another engine's format: the hint names its extra
    (tmp_path / "cache").mkdir()
    result = run_child(python, "run-onnx", [tiny], [hostile, other], tmp_path / "cache")
    check(result, [tiny], ["onnxruntime"])
    kind, text = result["refused"][str(hostile)]
    assert kind == "UnsafeModelError" and "external data of tensor 'W'" in text and "'..'" in text, text
    kind, text = result["refused"][str(other)]
    assert kind == "EngineNotInstalledError" and "pip install 'modelkit[run-tflite]'" in text, text
    # the command line too: `modelkit run` and `modelkit inspect` (whose op counts need the onnx package)
    np.save(tmp_path / "x.npy", X)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "MODELKIT_CACHE_DIR": str(tmp_path / "cache")}
    for args, shown in ((["run", str(tiny), "--input", str(tmp_path / "x.npy")], "probs: float32(2, 3)"),
                        (["inspect", str(tiny)], "op counts need the onnx package")):
        out = subprocess.run([str(python), "-I", "-B", "-m", "modelkit", *args], capture_output=True, text=True,
                             timeout=120, env=env, cwd=tmp_path)
        assert out.returncode == 0 and shown in out.stdout, (args, out.stdout[-2000:], out.stderr[-2000:])


def build_tiny_tflite(path: Path, subgraph: int = 0) -> Path:
    """softmax(x @ W + b) as a .tflite written with LiteRT's flatbuffer schema (no TensorFlow): FULLY_CONNECTED
    then SOFTMAX, x of shape (batch, 4) with a dynamic batch, a `serving_default` signature naming x and probs
    (`subgraph`: the subgraph that signature names; not 0 makes a hostile file)."""
    from ai_edge_litert import schema_py_generated as s

    from tests.security._tflite import pack

    w, b = weights()

    def tensor(name, shape, buffer=0, dynamic=False):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), s.TensorType.FLOAT32, buffer
        t.shapeSignature = [-1, *shape[1:]] if dynamic else None
        return t

    def buffer(data=None):
        buf = s.BufferT()
        buf.data = None if data is None else np.frombuffer(data.tobytes(), np.uint8)
        return buf

    def code(op):
        c = s.OperatorCodeT()
        c.builtinCode = c.deprecatedBuiltinCode = op
        return c

    def operator(index, inputs, outputs, kind, options):
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = index, inputs, outputs
        op.builtinOptionsType, op.builtinOptions = kind, options
        return op

    softmax = s.SoftmaxOptionsT()
    softmax.beta = 1.0
    graph = s.SubGraphT()
    graph.name = "main"
    graph.tensors = [tensor("serving_default_x:0", (1, 4), dynamic=True), tensor("W", (3, 4), 1),
                     tensor("b", (3,), 2), tensor("logits", (1, 3), dynamic=True),
                     tensor("StatefulPartitionedCall:0", (1, 3), dynamic=True)]
    graph.inputs, graph.outputs = [0], [4]
    graph.operators = [
        operator(0, [0, 1, 2], [3], s.BuiltinOptions.FullyConnectedOptions, s.FullyConnectedOptionsT()),
        operator(1, [3], [4], s.BuiltinOptions.SoftmaxOptions, softmax)]
    signature = s.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = "serving_default", subgraph
    signature.inputs, signature.outputs = [s.TensorMapT()], [s.TensorMapT()]
    signature.inputs[0].name, signature.inputs[0].tensorIndex = "x", 0
    signature.outputs[0].name, signature.outputs[0].tensorIndex = "probs", 4
    model = s.ModelT()
    model.version, model.description = 3, "tiny"
    model.operatorCodes = [code(s.BuiltinOperator.FULLY_CONNECTED), code(s.BuiltinOperator.SOFTMAX)]
    model.subgraphs, model.signatureDefs = [graph], [signature]
    model.buffers = [buffer(), buffer(np.ascontiguousarray(w.T)), buffer(b)]
    path.write_bytes(pack(model))
    return path


def test_run_tflite_alone(tmp_path):
    pytest.importorskip("ai_edge_litert")  # to build the files here
    python = runtime_venv("run-tflite", tmp_path / "venv")
    tiny = build_tiny_tflite(tmp_path / "tiny.tflite")
    hostile = build_tiny_tflite(tmp_path / "subgraph7.tflite", subgraph=7)
    (tmp_path / "cache").mkdir()  # a fresh trust store: the first open is probed in a sandboxed child of that venv
    result = run_child(python, "run-tflite", [tiny], [hostile], tmp_path / "cache")
    check(result, [tiny], ["ai-edge-litert"])
    kind, text = result["refused"][str(hostile)]
    assert kind == "LoadError" and "subgraph" in text, text
    assert list((tmp_path / "cache" / "trust" / "tflite").iterdir()), "the probe recorded nothing"


@pytest.mark.slow
def test_run_torch_alone(tmp_path):
    pytest.importorskip("torch")
    from tests.security._build import build_pt2, build_torchscript

    python = runtime_venv("run-torch", tmp_path / "venv")
    artifacts = [build_torchscript(tmp_path / "tiny.torchscript.pt"), build_pt2(tmp_path / "tiny.pt2")]
    (tmp_path / "cache").mkdir()
    result = run_child(python, "run-torch", artifacts, [], tmp_path / "cache")
    check(result, artifacts, ["torch.jit", "torch.export"])


@pytest.mark.slow
def test_run_tvm_alone(tmp_path, monkeypatch):
    """A library compiled here (modelkit[tvm]) runs where only modelkit[run-tvm] is installed; the trust store
    travels with it (MODELKIT_CACHE_DIR), as it would on a machine that compiled it."""
    pytest.importorskip("tvm")
    pytest.importorskip("onnx")
    from tests.security._build import build_tvm

    python = runtime_venv("run-tvm", tmp_path / "venv")
    monkeypatch.setenv("MODELKIT_CACHE_DIR", str(tmp_path / "cache"))
    library = build_tvm(tmp_path / "tvm", make_tiny_onnx(tmp_path / "tiny.onnx"))
    result = run_child(python, "run-tvm", [library], [], tmp_path / "cache")
    check(result, [library], ["tvm"])
    (tmp_path / "other_cache").mkdir()  # a machine that did not compile it: native code it never trusted
    result = run_child(python, "run-tvm", [], [library], tmp_path / "other_cache")
    kind, text = result["refused"][str(library)]
    assert kind == "UnsafeModelError" and "trust store" in text, text

