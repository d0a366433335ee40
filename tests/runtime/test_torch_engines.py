"""The TorchScript and torch.export engines: dynamic batch, typed input errors, the Signature read from
inside the artifact (or the manifest), and TorchScript without Keras in a fresh interpreter."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import manifest as _manifest
from modelkit.errors import DTypeError, InputNameError, LoadError, ShapeError
from modelkit.spec import Signature, TensorSpec
from tests.helpers import converted_to_torch  # one torch child per source model

ROOT = Path(__file__).resolve().parents[2]
# The engines run the torch-traced graph; the reference here is the same .keras under TensorFlow (the
# pytest process's backend): different kernels, so float32 rounding differs by ~1e-6.
CROSS_BACKEND_ATOL = 1e-4


@pytest.fixture(scope="module")
def torch_artifacts(cnn_torch, tmp_path_factory) -> dict[str, Path]:
    return {fmt: Path(r.path) for fmt, r in converted_to_torch(cnn_torch, tmp_path_factory).items()}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_dynamic_batch_matches_keras_and_stays_accurate(torch_artifacts, cnn_torch, fmt):
    from modelkit.core.data import test_split

    m = modelkit.load(torch_artifacts[fmt])
    assert m.engine == {"torchscript": "torch.jit", "pt2": "torch.export"}[fmt]
    assert m.signature.inputs == (TensorSpec("image", (None, 8, 8, 1)),)
    assert m.signature.output_names == ["probs"]
    inputs, labels = test_split("digits", "cnn")
    reference = modelkit.load(cnn_torch)
    for batch in (1, 5, 32):
        feed = {"image": inputs["image"][:batch]}
        got = m.predict(feed)["probs"]
        assert got.shape == (batch, 10) and got.dtype == np.float32
        np.testing.assert_allclose(got, reference.predict(feed)["probs"], atol=CROSS_BACKEND_ATOL)
    acc = float((m.predict(inputs)["probs"].argmax(-1) == labels).mean())
    assert acc >= 0.9


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_wrong_inputs_raise_typed_errors(torch_artifacts, fmt):
    m = modelkit.load(torch_artifacts[fmt])
    good = np.zeros((2, 8, 8, 1), np.float32)
    with pytest.raises(InputNameError, match=r"missing \['image'\], unexpected \['img'\]"):
        m.predict({"img": good})
    with pytest.raises(ShapeError, match=r"dimension 1 must be 8"):
        m.predict({"image": np.zeros((2, 9, 8, 1), np.float32)})
    with pytest.raises(ShapeError, match="expected rank 4"):
        m.predict({"image": np.zeros((2, 8, 8), np.float32)})
    with pytest.raises(DTypeError, match="expected dtype float32, got float64"):
        m.predict({"image": good.astype(np.float64)})
    readonly = good.copy()
    readonly.flags.writeable = False
    assert m.predict(readonly)["probs"].shape == (2, 10)  # read-only arrays are fine (copied, not shared)


_FRESH = """
import json, sys
if sys.argv[2] == "uninstalled":  # as if Keras, TensorFlow and JAX were not installed: imports fail
    for name in ("keras", "tensorflow", "jax"):
        sys.modules[name] = None
import numpy as np, modelkit
m = modelkit.load(sys.argv[1])
out = m.predict(np.ones((3, 8, 8, 1), np.float32))["probs"]
print(json.dumps({"sum": float(out.sum()), "shape": list(out.shape),
                  "heavy": sorted(k for k in sys.modules if k.split(".")[0] in ("keras", "tensorflow", "jax")
                                  and sys.modules[k] is not None)}))
"""


@pytest.mark.parametrize("fmt,mode", [("torchscript", "installed"), ("torchscript", "uninstalled"),
                                      ("pt2", "uninstalled")])
@pytest.mark.slow
def test_engine_runs_in_a_fresh_interpreter_without_keras(torch_artifacts, fmt, mode):
    proc = subprocess.run([sys.executable, "-c", _FRESH, str(torch_artifacts[fmt]), mode], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [] and result["shape"] == [3, 10]  # Keras never imported, nor TF / JAX
    assert result["sum"] == pytest.approx(3.0, abs=1e-4)  # three softmax rows


class _Doubler:
    """A plain torch module (no Keras): y = 2 * x summed over features, saved without a signature inside."""

    @staticmethod
    def module():
        import torch

        class Net(torch.nn.Module):
            def forward(self, x):
                return (2.0 * x.sum(1, keepdim=True),)

        return Net().eval()


SIG = Signature((TensorSpec("x", (None, 3)),), (TensorSpec("y", (None, 1)),))


def _write_manifest(path: Path, fmt: str) -> None:
    _manifest.write(path, _manifest.Manifest(format=fmt, signature=SIG.to_dict()))


def test_signature_falls_back_to_the_manifest_then_fails_typed(tmp_path):
    import torch

    ts = tmp_path / "plain.torchscript.pt"
    torch.jit.save(torch.jit.script(_Doubler.module()), str(ts))
    pt2 = tmp_path / "plain.pt2"
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(_Doubler.module(), (torch.ones(2, 3),), dynamic_shapes=({0: batch},)),
                      str(pt2))
    for path, fmt in ((ts, "torchscript"), (pt2, "pt2")):
        with pytest.raises(LoadError, match="no modelkit_signature.json inside and no manifest beside it"):
            modelkit.load(path)
        _write_manifest(path, fmt)
        m = modelkit.load(path)
        assert m.signature == SIG
        y = m.predict({"x": np.arange(12, dtype=np.float32).reshape(4, 3)})["y"]
        np.testing.assert_array_equal(y[:, 0], [6.0, 24.0, 42.0, 60.0])


def test_corrupt_file_device_and_threads(torch_artifacts, tmp_path):
    import torch

    for fmt, path in torch_artifacts.items():
        bad = tmp_path / path.name
        data = path.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        with pytest.raises((LoadError, modelkit.errors.FormatError)):
            modelkit.load(bad, format=fmt)
        if not torch.cuda.is_available():
            with pytest.raises(LoadError, match="needs a CUDA build of torch and a GPU"):
                modelkit.load(path, device="cuda")
        with pytest.raises(LoadError, match="unknown device 'tpu'"):
            modelkit.load(path, device="tpu")
    before = torch.get_num_threads()
    try:
        m = modelkit.load(torch_artifacts["torchscript"], threads=1)
        assert torch.get_num_threads() == 1 and m.predict(np.ones((1, 8, 8, 1), np.float32))["probs"].shape == (1, 10)
    finally:
        torch.set_num_threads(before)


def test_a_batch_outside_the_exported_range_is_a_shape_error(tmp_path):
    """torch.export's own shape guards (here batch <= 4) are not in the Signature: a ShapeError, not the
    AssertionError torch raises."""
    import torch

    path = tmp_path / "capped.pt2"
    batch = torch.export.Dim("batch", min=1, max=4)
    torch.export.save(torch.export.export(_Doubler.module(), (torch.ones(2, 3),), dynamic_shapes=({0: batch},)),
                      str(path))
    _write_manifest(path, "pt2")
    m = modelkit.load(path)
    assert m.predict(np.ones((4, 3), np.float32))["y"].shape == (4, 1)
    with pytest.raises(ShapeError) as info:
        m.predict(np.ones((5, 3), np.float32))
    assert str(info.value) == "capped.pt2 was exported for other input shapes than 'x' (5, 3): Guard failed: " \
                              "x.size()[0] <= 4"
