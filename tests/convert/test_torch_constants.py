"""Each weight stored once in a .pt2 and a .pte. torch.export lifted every weight Keras reads as a constant beside
its parameter, so the .pt2 stored both (modelkit/converters/_torch_constants.py): nc132's NASNetMobile held 17.5 MB
of weights and the same 17.5 MB again as constants. Its .pte was twice its ONNX too: Keras' metadata assert on each
weight it casts kept the weight as read beside its folded copy (_executorch_graph.drop_weight_asserts)."""
from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pytest

import modelkit


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """A conv net of 0.3 M parameters (1.2 MB of float32), BatchNorm and a Dense head, saved on TensorFlow."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    L = keras.layers
    keras.utils.set_random_seed(2)
    x = keras.Input((16, 16, 3), name="image")
    h = L.Conv2D(64, 3, padding="same", activation="relu")(x)
    h = L.BatchNormalization()(L.Conv2D(128, 3, padding="same")(h))
    h = L.Conv2D(128, 3, padding="same", activation="relu")(h)
    model = keras.Model(x, L.Dense(10, name="logits")(L.GlobalAveragePooling2D()(h)))
    path = tmp_path_factory.mktemp("cnn") / "cnn.keras"
    model.save(path)
    weights = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    return path, model, weights


def _stored(pt2, part: str) -> int:
    with zipfile.ZipFile(pt2) as z:
        return sum(i.file_size for i in z.infolist() if f"/data/{part}/" in i.filename)


@pytest.mark.slow
def test_a_pt2_stores_each_weight_once_and_reads_it_from_its_parameter(cnn, tmp_path):
    import torch

    src, model, weights = cnn
    (r,) = modelkit.convert(src, "pt2", out_dir=tmp_path)
    assert _stored(r.path, "constants") < 1024  # was every weight again (1.2 MB); a scalar or two stay
    assert weights <= _stored(r.path, "weights") <= weights * 1.05
    assert len(torch.export.load(r.path).constants) <= 2
    x = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(modelkit.load(r.path).predict(x)["logits"], np.asarray(model(x)), atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("executorch") is None, reason="executorch not installed")
def test_a_pte_stores_each_weight_once(cnn, tmp_path):
    src, model, weights = cnn
    (r,) = modelkit.convert(src, "executorch", out_dir=tmp_path)
    assert Path(r.path).stat().st_size <= weights * 1.2  # was 2x
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(modelkit.load(r.path).predict(x)["logits"], np.asarray(model(x)), atol=1e-4)


def test_constants_that_copy_no_parameter_are_kept():
    import torch

    from modelkit.converters._torch_constants import constants_as_parameters

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3), requires_grad=False)
            self.table = torch.arange(3.0)  # a plain tensor attribute: lifted, and no parameter holds its values

        def forward(self, x):
            return x * self.w + self.table

    program = torch.export.export(Net().eval(), (torch.zeros(2, 3),), strict=False)
    assert constants_as_parameters(program) == 0 and len(program.constants) == 1
    np.testing.assert_allclose(program.module()(torch.ones(2, 3)).numpy(), [[1.0, 2.0, 3.0]] * 2)
