"""keras -> torchscript: parity of the trained digits CNN from two backends (TensorFlow- and
torch-trained, both traced under torch), the JAX-trained two-input model with names kept, shapes
that Flatten/Reshape could bake, and the check that catches a trace which baked the batch."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.converters.keras_torchscript import TOLERANCE
from modelkit.errors import ConversionError
from modelkit.formats import Format, manifest_path
from tests.helpers import converted_to_torch
from tests.helpers.user_code import keras_beside

ATOL = 1e-5  # the edge's tolerance: the traced graph runs the same torch kernels as eager Keras


@pytest.fixture(scope="module")
def ts_cnn(cnn_tf, cnn_torch, tmp_path_factory) -> dict[str, Path]:
    return {backend: Path(converted_to_torch(src, tmp_path_factory)["torchscript"].path)
            for backend, src in (("tensorflow", cnn_tf), ("torch", cnn_torch))}


def test_tolerance_is_the_stated_one():
    assert TOLERANCE.atol == ATOL and TOLERANCE.min_cosine == 0.99999


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_parity_of_trained_cnn_from_each_backend(ts_cnn, backend):
    path = ts_cnn[backend]
    assert path.name.endswith(".torchscript.pt") and modelkit.formats.detect(path) == Format.TORCHSCRIPT
    m = json.loads(manifest_path(path).read_text())
    parity = m["parity"]
    assert parity["ok"] and parity["inputs"] == "digits test split (real samples)"
    assert [c["batch"] for c in parity["cases"]] == [1, 7]
    assert parity["tolerance"]["atol"] == ATOL
    (probs,) = parity["outputs"]
    assert probs["name"] == "probs" and probs["max_abs"] <= ATOL and probs["argmax_agreement"] == 1.0
    assert probs["cosine"] >= 0.99999 and probs["spread"] > 0.01  # a real, varying reference
    assert m["training"]["backend"] == backend and m["format"] == "torchscript"
    edge = m["chain"][-1]
    assert edge["converter"] == "modelkit.converters.keras_torchscript:keras_to_torchscript"
    assert edge["versions"]["torch"].startswith("2.13") and edge["versions"]["keras"] == "3.15.1"


@pytest.mark.slow
def test_two_inputs_two_outputs_trained_under_jax_keep_names(multi_io_jax, tmp_path_factory):
    r = converted_to_torch(multi_io_jax, tmp_path_factory)["torchscript"]
    assert r.parity["ok"] and [c["batch"] for c in r.parity["cases"]] == [1, 7]
    outs = {o["name"]: o for o in r.parity["outputs"]}
    assert set(outs) == {"probs", "intensity"} and all(o["max_abs"] <= ATOL for o in outs.values())
    m = modelkit.load(r.path)
    assert m.signature.input_names == ["image", "features"]
    assert m.signature.output_names == ["probs", "intensity"]
    assert m.signature.inputs[1].shape == (None, 8) and m.signature.outputs[1].shape == (None, 1)


@pytest.mark.slow
def test_flatten_and_reshape_do_not_bake_the_batch(tmp_path):
    """Flatten and Reshape compute shapes from the batch; traced / exported at batch 3, both must verify at
    1 and 7 and run at other batch sizes."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    L = keras.layers
    keras.utils.set_random_seed(1)
    x = keras.Input((8, 8, 1), name="image")
    h = L.Reshape((16, 4))(L.Flatten()(L.Conv2D(1, 3, padding="same")(x)))
    h = L.Flatten()(L.LayerNormalization()(h))
    src = tmp_path / "reshaper.keras"
    keras.Model(x, L.Dense(10, activation="softmax", name="probs")(h)).save(src)
    results = modelkit.convert(src, "torchscript,pt2", out_dir=tmp_path)
    rng = np.random.default_rng(0)
    for r in results:
        assert r.parity["ok"] and r.max_abs <= ATOL and [c["batch"] for c in r.parity["cases"]] == [1, 7]
        m = modelkit.load(r.path)
        for batch in (1, 2, 32):
            assert m.predict(rng.random((batch, 8, 8, 1), dtype=np.float32))["probs"].shape == (batch, 10)


def test_a_trace_that_baked_the_batch_is_caught():
    """int() on a size is recorded as a constant by torch.jit.trace: the edge's batch check says so."""
    import torch

    from modelkit.converters._torch_module import check_batches
    from modelkit.spec import Signature, TensorSpec

    def baked(x):
        return (x.reshape(int(x.shape[0]), -1).sum(1),)

    sig = Signature((TensorSpec("x", (None, 4)),), (TensorSpec("y", (None,)),))
    with pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(baked, (torch.rand(3, 4),))
    with pytest.raises(ConversionError, match="does not run at batch 1 .*baked into the graph"):
        check_batches(traced, baked, sig, "the TorchScript trace")
    good = torch.jit.trace(lambda x: (x.sum(1),), (torch.rand(3, 4),))
    check_batches(good, lambda x: (x.sum(1),), sig, "the TorchScript trace")  # no error


def _pinned(path: Path) -> tuple[list[str], list[str]]:
    """The Device constants and the TF32-allowing convolutions left in a TorchScript file's forward."""
    import torch

    graph = torch.jit.load(str(path)).inlined_graph
    devices = [str(n) for n in graph.findAllNodes("prim::Constant") if n.output().type().kind() == "DeviceObjType"]
    tf32 = [str(n) for n in graph.findAllNodes("aten::_convolution") if n.inputsAt(12).toIValue() is True]
    return devices, tf32


def test_the_saved_graph_follows_its_input_device_exactly_instead_of_how_it_was_traced(ts_cnn):
    """Keras-on-torch's trace pins every tensor to 'cpu' (36 `.to(device='cpu')` in this CNN) and lets cuDNN use
    TF32: loaded for a GPU, the file ran each op on the CPU (MobileNetV2 b32 on an H200: 107-171 ms instead of
    8-13), and its convolutions lost precision (3.1e-3 max abs error)."""
    import torch

    code = torch.jit.load(str(ts_cnn["tensorflow"])).code
    assert _pinned(ts_cnn["tensorflow"]) == ([], []) and "ops.prim.device(" in code and "_convolution(" in code


def test_a_file_traced_with_pinned_devices_and_tf32_is_made_portable():
    """What the engine does on load for device='cuda' with a file an older modelkit or another tool traced."""
    import torch

    from modelkit.runtime.torchscript import make_portable

    class Pinned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(4, 2, 1)

        def forward(self, x):
            state = torch.zeros((x.shape[0], 2, 1), device=torch.device("cpu"))  # an RNN's zero state
            return (self.conv(x.to(device=torch.device("cpu"), dtype=torch.float32)) + state,)

    x = torch.rand(3, 4, 1)
    traced = torch.jit.trace(Pinned(), (x,))
    want = traced(x)[0]
    traced_graph = traced.inlined_graph  # kept alive while its nodes are read
    convolutions = traced_graph.findAllNodes("aten::_convolution")
    assert [n.inputsAt(12).toIValue() for n in convolutions] == [True]  # as traced: TF32 allowed
    assert make_portable(traced) == (2, 1)  # the two devices (zeros, .to) and the one convolution
    assert make_portable(traced) == (0, 0)  # nothing left to replace
    graph = traced.graph
    assert not [n for n in graph.findAllNodes("prim::Constant") if n.output().type().kind() == "DeviceObjType"]
    assert [n.inputsAt(12).toIValue() for n in graph.findAllNodes("aten::_convolution")] == [False]
    assert torch.equal(traced(x)[0], want)


LOOP = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="loop")
class PerImage(keras.layers.Layer):
    """Each row over its own max, row by row (batched while Keras builds the model, when the batch is unknown)."""
    def call(self, x):
        if x.shape[0] is None:
            return x / (ops.max(x, axis=1, keepdims=True) + 1.0)
        return ops.stack([x[i] / (ops.max(x[i]) + 1.0) for i in range(x.shape[0])])
'''


@pytest.mark.slow
def test_a_layer_that_loops_over_the_batch_is_named_by_every_torch_format(tmp_path):
    """A custom layer normalizing image by image in a Python loop fixes the batch: torchscript, pt2 and executorch
    name the layer and say what to do, beside torch's own words ("Constraints violated (batch)")."""
    loop, keras = keras_beside(tmp_path, "loop", LOOP)
    x = keras.Input((6,), name="x")
    keras.Model(x, keras.layers.Dense(2, name="y")(loop.PerImage(name="per_image")(x))).save(tmp_path / "loop.keras")
    formats = "torchscript,pt2" + (",executorch" if importlib.util.find_spec("executorch") else "")
    with pytest.raises(ConversionError) as info:
        modelkit.convert(tmp_path / "loop.keras", formats, out_dir=tmp_path / "out",
                         imports=[str(tmp_path / "loop.py")])
    text = str(info.value)
    named = "layer 'per_image' (PerImage) turns the batch into the traced size (a Python loop over the batch"
    assert text.count(named) == len(formats.split(",")), text


VMAP = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vmap")
class RowScale(keras.layers.Layer):
    """Each row times its own max, mapped over the batch (ops.vectorized_map)."""
    def call(self, x):
        return ops.vectorized_map(lambda row: row * ops.max(row), x)
'''


@pytest.mark.slow
def test_vectorized_map_is_refused_by_torchscript_naming_what_takes_it(tmp_path):
    """torch.jit.trace cannot record torch.vmap ("Unsupported value kind: Tensor", nc83); pt2 takes it."""
    from modelkit.errors import UnsupportedConversionError

    vmap, keras = keras_beside(tmp_path, "vmap", VMAP)
    x = keras.Input((5,), name="x")
    keras.Model(x, keras.layers.Dense(2, name="y")(vmap.RowScale(name="rows")(x))).save(tmp_path / "vmap.keras")
    imports = [str(tmp_path / "vmap.py")]
    with pytest.raises(UnsupportedConversionError, match=r"calling RowScale\.call\(\)\. keras\.ops\.vectorized_map "
                                                         r"runs torch\.vmap, which torch\.jit\.trace cannot record; "
                                                         r".*\(pt2, executorch\)"):
        modelkit.convert(tmp_path / "vmap.keras", "torchscript", out_dir=tmp_path / "out", imports=imports)
    (pt2,) = modelkit.convert(tmp_path / "vmap.keras", "pt2", out_dir=tmp_path / "out", imports=imports)
    data = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    want = modelkit.load(tmp_path / "vmap.keras", imports=imports).predict(data)["y"]
    np.testing.assert_allclose(modelkit.load(pt2.path).predict(data)["y"], want, atol=1e-5)


COND = '''import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cond")
class Gate(keras.layers.Layer):
    """Doubles the batch when its mean is positive, else shifts it (ops.cond on a tensor)."""
    def call(self, x):
        return ops.cond(ops.mean(x) > 0, lambda: x * 2.0, lambda: x - 1.0)
'''


def _cond_model(tmp_path):
    cond, keras = keras_beside(tmp_path, "cond", COND)
    x = keras.Input((4,), name="x")
    keras.Model(x, keras.layers.Dense(3, name="y")(cond.Gate(name="gate")(x))).save(tmp_path / "cond.keras")
    return tmp_path / "cond.keras", [str(tmp_path / "cond.py")]


def _both_branches(source, artifact, what: str) -> None:
    for x in (np.full((2, 4), 3.0, np.float32), np.full((5, 4), -3.0, np.float32)):
        np.testing.assert_allclose(artifact.predict(x)["y"], source.predict(x)["y"], atol=1e-4, err_msg=what)


@pytest.mark.slow
def test_a_data_dependent_cond_keeps_both_branches_in_torchscript_and_pt2(tmp_path):
    """nc85: Keras' torch cond branches in Python; torch.jit.trace recorded the branch the example took (a batch of
    negative mean got x * 2 instead of x - 1, and parity's samples all took the traced branch), and torch.export
    refused the data-dependent branch. Both branches and a select now."""
    src, imports = _cond_model(tmp_path)
    results = modelkit.convert(src, "torchscript,pt2", out_dir=tmp_path / "out", imports=imports)
    source = modelkit.load(src, imports=imports)
    for r in results:
        _both_branches(source, modelkit.load(r.path), r.format)


@pytest.mark.slow
def test_a_data_dependent_cond_keeps_both_branches_in_executorch(tmp_path):
    pytest.importorskip("executorch")
    src, imports = _cond_model(tmp_path)
    (result,) = modelkit.convert(src, "executorch", out_dir=tmp_path / "out", imports=imports)
    _both_branches(modelkit.load(src, imports=imports), modelkit.load(result.path), "executorch")
