"""Subclassed Keras models (registered `keras.Model` subclasses with `call()`, built by calling them on
data, fitted and saved) convert to every format with parity. Their inputs come from the saved build
shapes (named after call()'s argument, or the dict keys), or from an input spec; outputs are `output_0`,
`output_1`, ... in every format. Saved under TensorFlow here, under torch and JAX in child processes."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import modelkit
from modelkit import _child
from modelkit.cli import main
from modelkit.errors import InputError, LoadError
from modelkit.keras_io.inputs import parse_input_spec
from modelkit.spec import TensorSpec
from tests.convert import subclassed_models

MODULE = Path(__file__).with_name("subclassed_models.py")
TORCH_AND_TF = "onnx,tflite,saved_model,torchscript,pt2"


@pytest.fixture(scope="module", autouse=True)
def registered():
    """Every converting process imports the module that registers the classes (MODELKIT_IMPORTS)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELKIT_IMPORTS", str(MODULE))
        yield


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("subclassed")
    out = {}
    for kind, backend in (("classifier", "tensorflow"), ("conv_gated", "tensorflow"), ("two_tower", "torch"),
                          ("pair", "jax")):
        out[kind] = folder / f"{kind}_{backend}.keras"
        if backend == "tensorflow":  # this process's backend
            done = subclassed_models.save(kind, str(out[kind]))
        else:
            done = _child.run("tests.convert.subclassed_models:save", {"kind": kind, "out": str(out[kind])},
                              backend=backend, quiet=True)
        assert done["backend"] == backend
    return out


def _signature(path: str | Path) -> tuple[list[tuple[str, tuple]], list[str]]:
    sig = modelkit.load(path).signature
    return [(s.name, s.shape) for s in sig.inputs], sig.output_names


def _check(results, inputs, outputs) -> None:
    for r in results:
        assert r.parity["ok"], (r.format, r.parity)
        assert _signature(r.path) == (inputs, outputs), r.format


@pytest.mark.slow
def test_one_input_classifier_converts_to_every_format(saved, tmp_path):
    assert "build_config" in json.loads(zipfile.ZipFile(saved["classifier"]).read("config.json"))
    results = modelkit.convert(saved["classifier"], TORCH_AND_TF, out_dir=tmp_path)
    assert sorted(r.format for r in results) == sorted(TORCH_AND_TF.split(","))
    _check(results, [("x", (None, 8))], ["output_0"])  # x: the name of call()'s argument
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    want = modelkit.load(saved["classifier"]).predict(x)["output_0"]
    assert np.allclose(want.sum(-1), 1.0, atol=1e-5)  # the softmax head: the trained model, not a stand-in
    for r in results:
        np.testing.assert_allclose(modelkit.load(r.path).predict(x)["output_0"], want, atol=1e-4)


@pytest.mark.slow
def test_dict_inputs_saved_under_torch(saved, tmp_path):
    results = modelkit.convert(saved["two_tower"], "onnx,pt2", out_dir=tmp_path)
    _check(results, [("left", (None, 5)), ("right", (None, 3))], ["output_0"])


@pytest.mark.slow
def test_list_inputs_and_two_outputs_saved_under_jax(saved, tmp_path):
    results = modelkit.convert(saved["pair"], "tflite,torchscript", out_dir=tmp_path)
    _check(results, [("inputs_0", (None, 4)), ("inputs_1", (None, 4))], ["output_0", "output_1"])


def test_custom_layer_inside(saved, tmp_path):
    results = modelkit.convert(saved["conv_gated"], "saved_model,onnx", out_dir=tmp_path)
    _check(results, [("x", (None, 10, 10, 2))], ["output_0"])


def _without_build_config(src: Path, dest: Path) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config.pop("build_config")
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    return dest


@pytest.mark.slow
def test_a_file_without_build_shapes_needs_an_input_spec(saved, tmp_path):
    src = _without_build_config(saved["classifier"], tmp_path / "unbuilt.keras")
    with pytest.raises(LoadError, match=r"no defined inputs and its file records no build shapes.*--input-spec "
                                         r"name:shape:dtype"):
        modelkit.convert(src, "onnx", out_dir=tmp_path)
    (r,) = modelkit.convert(src, "onnx", out_dir=tmp_path, input_spec=["features:?,8:float32"])
    assert r.parity["ok"] and _signature(r.path) == ([("features", (None, 8))], ["output_0"])
    manifest = json.loads(Path(r.path + ".modelkit.json").read_text())
    assert manifest["extra"]["input_spec"] == [{"name": "features", "shape": [None, 8], "dtype": "float32"}]
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    want = modelkit.load(saved["classifier"]).predict(x)["output_0"]  # the saved weights, loaded after building
    np.testing.assert_allclose(modelkit.load(r.path).predict({"features": x})["output_0"], want, atol=1e-4)
    with pytest.raises(LoadError, match="weights do not fit the inputs given by the input spec"):
        modelkit.convert(src, "onnx", out_dir=tmp_path / "bad", input_spec=["x:?,9:float32"])


def test_input_spec_on_the_command_line(saved, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["convert", str(saved["classifier"]), "--to", "saved_model", "--out", str(tmp_path),
                             "--input-spec", "x:?,8:float32", "--json"])
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout[r.stdout.index("["):])
    assert res["parity"]["ok"] and _signature(res["path"]) == ([("x", (None, 8))], ["output_0"])
    r = runner.invoke(main, ["convert", str(saved["classifier"]), "--to", "onnx", "--out", str(tmp_path),
                             "--input-spec", "x:?,eight"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == ["error: input spec 'x:?,eight': dimension 'eight' is not an integer "
                                             "or '?'"]


@pytest.mark.slow
def test_input_spec_is_refused_for_a_model_that_defines_its_inputs(tmp_path):
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    x = keras.Input((3,), name="x")
    src = tmp_path / "functional.keras"
    keras.Model(x, keras.layers.Dense(2)(x)).save(src)
    with pytest.raises(InputError, match=r"the model defines its inputs \['x'\]; an input spec is only for models "
                                         "that do not"):
        modelkit.convert(src, "onnx", out_dir=tmp_path, input_spec=["x:?,3"])


@pytest.mark.parametrize("text,want", [("x:?,8:float32", TensorSpec("x", (None, 8), "float32")),
                                       ("ids:?,?:int32", TensorSpec("ids", (None, None), "int32")),
                                       ("img:-1,32,32,3", TensorSpec("img", (None, 32, 32, 3)))])
def test_parse_input_spec(text, want):
    assert parse_input_spec(text) == want


@pytest.mark.parametrize("text,msg", [("x", "expected name:shape"), ("x:4,8", "the batch and must be dynamic"),
                                      ("x:?,0", "must be positive"), ("x:?,8:floaty", "input spec 'x:\\?,8:floaty'")])
def test_parse_input_spec_errors(text, msg):
    with pytest.raises(InputError, match=msg):
        parse_input_spec(text)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["classifier", "conv_gated", "two_tower", "pair"])
def test_every_subclassed_model_to_every_format(saved, kind, tmp_path):
    results = modelkit.convert(saved[kind], "all", out_dir=tmp_path)
    assert sorted(r.format for r in results) == ["executorch", "onnx", "openvino", "pt2", "saved_model", "tflite",
                                                     "torchscript", "tvm"]
    names = {tuple(_signature(r.path)[1]) for r in results}
    assert len(names) == 1 and all(r.parity["ok"] for r in results)
