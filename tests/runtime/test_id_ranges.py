"""Ids past an Embedding's table are refused by Model.predict for every engine, from the range the manifest
records: OpenVINO returned garbage for them without a word, onnxruntime raised a LoadError, torch a bare
IndexError (found on a wide & deep model: category id 25 into Embedding(20, 4))."""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from modelkit.errors import InputError

IDS_ERROR = r"input 'cat': ids must be in \[0, 20\) \(Embedding 'embedding': ids below input_dim 20\); got values " \
            r"from -1 to 25$"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A two-input model (category id -> Embedding, features -> Dense) converted to onnx and openvino."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    keras.utils.set_random_seed(0)
    cat, feats = keras.Input((1,), dtype="int32", name="cat"), keras.Input((3,), name="feats")
    emb = keras.layers.Flatten()(keras.layers.Embedding(20, 4, name="embedding")(cat))
    out = keras.layers.Dense(1, name="y")(keras.layers.Concatenate()([emb, keras.layers.Dense(4)(feats)]))
    src = tmp_path_factory.mktemp("ids") / "wide.keras"
    keras.Model([cat, feats], out).save(src)
    formats = "onnx,openvino" if _has("openvino") else "onnx"
    return {str(getattr(r.format, "value", r.format)): r.path for r in modelkit.convert(src, formats, verbose=False)}


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_ids_past_the_table_are_an_input_error_for_every_engine(artifacts, fmt):
    if fmt not in artifacts:
        pytest.skip(f"{fmt} is not installed")
    model = modelkit.load(artifacts[fmt], verbose=False)
    feats = np.ones((2, 3), np.float32)
    ok = model.predict({"cat": np.array([[0], [19]], np.int32), "feats": feats})
    assert ok["y"].shape == (2, 1)
    with pytest.raises(InputError, match=IDS_ERROR):
        model.predict({"cat": np.array([[25], [-1]], np.int32), "feats": feats})


@pytest.mark.slow
def test_a_pt2_without_its_manifest_fails_typed_on_an_id_past_the_table(artifacts, tmp_path):
    """No manifest, no recorded range: torch's own IndexError came out bare from .pt2 (a LoadError from TorchScript)."""
    import shutil

    from modelkit.errors import LoadError

    pytest.importorskip("torch")
    src = artifacts["onnx"].replace(".onnx", ".keras")
    (r,) = modelkit.convert(src, "pt2", out_dir=tmp_path, verbose=False)
    bare = tmp_path / "bare" / "wide.pt2"
    bare.parent.mkdir()
    shutil.copy(r.path, bare)  # the artifact alone: its signature travels inside
    model = modelkit.load(bare, verbose=False)
    with pytest.raises(LoadError, match=r"wide.pt2: torch failed running this model: index out of range"):
        model.predict({"cat": np.array([[25]], np.int32), "feats": np.ones((1, 3), np.float32)})


@pytest.mark.slow
def test_a_keras_model_checks_the_ids_its_layers_bound(artifacts):
    """A .keras file has no manifest: its Embedding's table is read from the model itself (TensorFlow's raw
    InvalidArgumentError came out of predict; under JAX the lookup gives NaN, or the last row for -1, silently)."""
    src = artifacts["onnx"].replace(".onnx", ".keras")
    model = modelkit.load(src)
    feats = np.ones((2, 3), np.float32)
    assert model.predict({"cat": np.array([[0], [19]], np.int32), "feats": feats})["y"].shape == (2, 1)
    with pytest.raises(InputError, match=IDS_ERROR):
        model.predict({"cat": np.array([[25], [-1]], np.int32), "feats": feats})
