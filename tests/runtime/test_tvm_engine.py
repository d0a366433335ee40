"""The TVM engine: a compiled library runs by name through the Signature, matches onnxruntime,
and rejects bad inputs with typed errors before the VM sees them."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import modelkit
from modelkit.errors import DTypeError, FormatError, InputNameError, LoadError, ShapeError
from tests.helpers import make_tiny_onnx

pytest.importorskip("tvm")


@pytest.fixture(scope="module")
def tiny_lib(tmp_path_factory):
    from modelkit.targets import compile

    folder = tmp_path_factory.mktemp("tvm_engine")
    onnx_path = make_tiny_onnx(folder / "tiny.onnx")
    return compile(onnx_path, target="server-cpu"), onnx_path


def test_matches_onnxruntime_by_name(tiny_lib):
    result, onnx_path = tiny_lib
    m = modelkit.load(result.path)
    assert m.engine == "tvm" and m.format.value == "tvm"
    assert m.signature.input_names == ["x"] and m.signature.inputs[0].shape == (None, 4)
    assert m.signature.output_names == ["probs"]
    ort = modelkit.load(onnx_path)
    for batch in (1, 5, 32):
        x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
        got, want = m.predict({"x": x}), ort.predict({"x": x})
        assert list(got) == ["probs"] and got["probs"].shape == (batch, 3)
        np.testing.assert_allclose(got["probs"], want["probs"], atol=1e-5)
        np.testing.assert_allclose(got["probs"].sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("bad, err, msg", [
    ({"y": np.zeros((1, 4), np.float32)}, InputNameError, r"missing \['x'\]"),
    ({"x": np.zeros((1, 5), np.float32)}, ShapeError, "dimension 1 must be 4"),
    ({"x": np.zeros((4,), np.float32)}, ShapeError, "expected rank 2"),
    ({"x": np.zeros((1, 4), np.int64)}, DTypeError, "expected dtype float32, got int64"),
    ({"x": np.zeros((0, 4), np.float32)}, ShapeError, "empty tensor"),
])
def test_bad_inputs_are_typed_errors(tiny_lib, bad, err, msg):
    with pytest.raises(err, match=msg):
        modelkit.load(tiny_lib[0].path).predict(bad)


def test_fixed_batch_library_refuses_other_batches(tmp_path):
    from modelkit.targets import compile

    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx")
    result = compile(onnx_path, batch=3)
    m = modelkit.load(result.path)
    assert m.signature.inputs[0].shape == (3, 4) and m.signature.outputs[0].shape == (3, 3)
    assert {c["batch"] for c in result.parity["cases"]} == {3} and result.parity["ok"]
    x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    np.testing.assert_allclose(m.predict(x)["probs"], modelkit.load(onnx_path).predict(x)["probs"], atol=1e-5)
    with pytest.raises(ShapeError, match="dimension 0 must be 3"):
        m.predict(np.zeros((2, 4), np.float32))


def test_library_without_manifest_is_refused(tiny_lib, tmp_path):
    lonely = tmp_path / "lonely.tvm.so"
    shutil.copy(tiny_lib[0].path, lonely)
    with pytest.raises(FormatError, match="without a TVM manifest"):
        modelkit.load(lonely)
    with pytest.raises(LoadError, match="needs the manifest"):
        modelkit.load(lonely, format="tvm")


def test_cuda_on_a_cpu_library_is_a_typed_error(tiny_lib):
    m = modelkit.load(tiny_lib[0].path, device="cuda")  # loads for inspection
    with pytest.raises(LoadError, match="compiled for cpu"):
        m.predict(np.zeros((1, 4), np.float32))


def test_manifest_records_target_and_tvm(tiny_lib):
    manifest = json.loads(open(tiny_lib[0].path + ".modelkit.json").read())
    assert manifest["format"] == "tvm" and manifest["target"] == "server-cpu"
    extra = manifest["extra"]
    assert extra["tvm_version"].startswith("0.27") and extra["dynamic_batch"] is True and extra["batch"] is None
    assert extra["elf"]["machine"] == 62 and extra["verified"] == "parity"
    assert manifest["chain"][-1]["versions"]["tvm"] == extra["tvm_version"]
    assert manifest["parity"]["ok"] and [c["batch"] for c in manifest["parity"]["cases"]] == [1, 7]


def test_import_runtime_stays_light():
    code = "import sys, modelkit.runtime, modelkit.runtime.tvm, modelkit.targets; " \
           "print(sorted(m for m in ('tvm', 'tensorflow', 'torch', 'onnx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _fake_topology(root, cores):
    """A sysfs cpu folder where allowed CPU i sits on physical core cores[i] (one package)."""
    import os

    for cpu, core in zip(sorted(os.sched_getaffinity(0)), cores):
        topo = root / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text("0\n")
        (topo / "core_id").write_text(f"{core}\n")


def test_default_threads_counts_physical_cores_of_the_affinity_mask(tmp_path):
    import os

    from modelkit.runtime.tvm_host import default_threads

    allowed = len(os.sched_getaffinity(0))
    _fake_topology(tmp_path / "smt", [i // 2 for i in range(allowed)])  # two hyper-threads per core
    assert default_threads(tmp_path / "smt") == max(1, (allowed + 1) // 2)
    _fake_topology(tmp_path / "plain", list(range(allowed)))  # one thread per core (a VM's vCPUs)
    assert default_threads(tmp_path / "plain") == allowed
    assert default_threads(tmp_path / "hidden") == allowed  # no topology: every allowed CPU


@pytest.mark.slow
def test_engine_starts_tvm_with_one_thread_per_core(tiny_lib):
    """TVM alone would start half the logical CPUs on x86-64 (1 thread on a 2-core VM without SMT, where
    onnxruntime runs 2); the engine starts its pool with default_threads(), and an explicit threads= wins."""
    import os

    code = ("import sys, numpy as np, modelkit, tvm; from modelkit.runtime.tvm_host import default_threads; "
            "kw = {'threads': int(sys.argv[2])} if len(sys.argv) > 2 else {}; default = default_threads(); "
            "m = modelkit.load(sys.argv[1], **kw); m.predict(np.zeros((64, 4), np.float32)); "
            "print(tvm.runtime.num_threads(), default)")
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    run = lambda *extra: subprocess.run([sys.executable, "-c", code, tiny_lib[0].path, *extra], env=env,  # noqa: E731
                                        capture_output=True, text=True, check=True, timeout=120).stdout.split()
    started, default = run()
    assert started == default
    assert run("1")[0] == "1"


@pytest.mark.slow
def test_a_small_tvm_pool_leaves_the_process_cpu_mask_alone(tiny_lib):
    """TVM binds its threads by default: a pool smaller than the CPUs pins the calling thread to one core, and
    every thread started after it (an onnxruntime or torch pool) inherits the one-core mask."""
    import os

    code = ("import os, sys, threading, modelkit, tvm; before = os.sched_getaffinity(0); "
            "modelkit.load(sys.argv[1], threads=1); tvm.runtime.num_threads(); "  # starts TVM's pool
            "seen = []; t = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0))); t.start(); "
            "t.join(); print(before == os.sched_getaffinity(0) == seen[0], len(before))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TVM_", "OMP_"))}
    out = subprocess.run([sys.executable, "-c", code, tiny_lib[0].path], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out[0] == "True", f"TVM's pool changed the process's CPU mask ({out[1]} CPUs before)"


def _passthrough_onnx(path):
    """y = x (an input passed through), k = argmax(x) (int64), g = x > 0.5 (bool)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]),
         helper.make_node("ArgMax", ["x"], ["k"], axis=1, keepdims=0),
         helper.make_node("Greater", ["x", "zero"], ["g"])],
        "passthrough", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("k", TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info("g", TensorProto.BOOL, ["batch", 4])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.5])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_outputs_are_the_callers_own_arrays_of_every_dtype(tmp_path):
    """Outputs come back through DLPack and a copy: int64 and bool too, and an output that is the input
    passed through is not the caller's input memory (changing it changes nothing else)."""
    from modelkit.targets import compile

    result = compile(_passthrough_onnx(tmp_path / "p.onnx"), target="server-cpu")
    m = modelkit.load(result.path)
    buf = np.empty(16 + 64, np.float32)  # a 64-byte aligned input: the engine passes it to TVM without a copy
    x = buf[(-buf.ctypes.data % 64) // 4:][:16].reshape(4, 4)
    x[...] = np.arange(16, dtype=np.float32).reshape(4, 4) - 7
    out = m.predict(x)
    assert out["k"].dtype == np.int64 and out["k"].tolist() == [3, 3, 3, 3]
    assert out["g"].dtype == np.bool_ and out["g"].tolist() == (x > 0.5).tolist()
    assert not np.shares_memory(out["y"], x) and out["y"].flags.writeable
    out["y"][...] = 99
    assert x[0, 0] == -7 and m.predict(x)["y"][0, 0] == -7
