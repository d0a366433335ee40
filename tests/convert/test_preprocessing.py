"""Keras preprocessing layers in every format. Each (layer, format) cell either converts with parity or
is refused before any work with a typed error naming the layer, the format, the reason and the formats
that take it (modelkit.converters.support.RULES). CI runs the adapted Normalization to five formats (its
mean and variance used to become extra ONNX inputs) and the refusals; the full matrix, with proof that
each refused cell really fails without the refusal, is `slow`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import _child
from modelkit.converters.support import check_support
from modelkit.errors import UnsupportedConversionError
from modelkit.formats import manifest_path
from tests.convert import preprocessing_models

FORMATS = ("onnx", "saved_model", "tflite", "torchscript", "pt2", "executorch", "tvm", "openvino")  # refusals' order
_ALL_BUT_SAVED_MODEL = {f: "" for f in FORMATS if f != "saved_model"}
# kind -> {refused format: fragment of the reason}; every other cell converts with parity
REFUSED: dict[str, dict[str, str]] = {
    "category_encoding": {"tflite": "DenseBincount"},  # tvm: OneHot mended for TVM's importer (targets/tvm)
    "center_crop": {"tvm": "std::bad_alloc"},
    "hashing": {**_ALL_BUT_SAVED_MODEL, "onnx": "StringToHashBucketFast", "tflite": "AsString"},
    # integer_lookup converts everywhere: traced as comparisons (modelkit/converters/_lookup.py)
    "integer_lookup_inverse": {**_ALL_BUT_SAVED_MODEL, "onnx": "LookupTableFindV2", "tflite": "LookupTableFindV2"},
    "hashed_crossing": {**_ALL_BUT_SAVED_MODEL, "onnx": "SparseCross", "tflite": "SparseCross"},
    "string_lookup": {f: "string tensors" for f in FORMATS},
    "text_vectorization": {f: "string tensors" for f in FORMATS},
}
LAYER = {"norm_adapted": "norm", "norm_given": "norm", "rescaling": "rescale", "resizing": "resize",
         "center_crop": "crop", "discretization": "disc", "category_encoding": "cat", "category_one_hot": "cat",
         "hashing": "hash", "integer_lookup": "lookup", "integer_lookup_inverse": "lookup", "hashed_crossing": "cross",
         "string_lookup": "vocab", "text_vectorization": "tv"}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("preprocessing")
    out = {}
    for kind in preprocessing_models.BUILDERS:
        out[kind] = folder / f"{kind}.keras"
        preprocessing_models.save(kind, str(out[kind]))
    return out


def _expected_refusal(kind: str, fmt: str) -> str:
    working = [f for f in FORMATS if f not in REFUSED.get(kind, {}) and f != fmt]
    # the formats listed are those that take the layer; a string input is taken by none
    return (rf"layer '{LAYER[kind]}' \(\w+\) cannot be converted to {fmt}: .*{REFUSED[kind][fmt]}.*; "
            rf"formats that take it: {', '.join(working) or 'none'}$")


def _parity(path: Path) -> dict:
    return json.loads(manifest_path(path).read_text())["parity"]


@pytest.mark.slow
def test_adapted_normalization_converts_to_every_format_with_its_statistics_folded(models, tmp_path):
    src = models["norm_adapted"]
    results = {r.format: r for r in modelkit.convert(src, "onnx,tflite,saved_model,torchscript,pt2", out_dir=tmp_path)}
    assert sorted(results) == ["onnx", "pt2", "saved_model", "tflite", "torchscript"]
    for fmt, r in results.items():
        assert r.parity["ok"], (fmt, r.parity)
        assert r.max_abs <= (1e-4 if fmt in ("onnx", "tflite") else 1e-5)
        # inputs drawn around the adapted statistics (mean 50, std 20), not from [0, 1)
        assert r.parity["inputs"].startswith("ranges inferred from the model: 'x' in [")
        assert "Normalization 'norm': mean ± 2 std" in r.parity["inputs"]
        m = modelkit.load(r.path)
        assert m.signature.input_names == ["x"] and m.signature.output_names == ["out"]
    import onnx

    graph = onnx.load(str(results["onnx"].path)).graph
    assert [i.name for i in graph.input] == ["x"]  # mean and variance are constants, not graph inputs
    x = np.random.default_rng(1).normal(50, 20, (5, 6)).astype(np.float32)
    keras_out = modelkit.load(src).predict(x)["out"]
    for fmt in ("onnx", "tflite"):
        np.testing.assert_allclose(modelkit.load(results[fmt].path).predict(x)["out"], keras_out, atol=1e-4)


@pytest.mark.slow
def test_normalization_from_a_torch_saved_file_converts_to_onnx(tmp_path):
    src = tmp_path / "norm_torch.keras"
    done = _child.run("tests.convert.preprocessing_models:save", {"kind": "norm_given", "out": str(src)},
                      backend="torch", quiet=True)
    assert done["backend"] == "torch"
    (r,) = modelkit.convert(src, "onnx", out_dir=tmp_path)
    assert r.parity["ok"] and r.max_abs <= 1e-4
    # per-feature ranges (means 5, -3, 100, 0.5; std 2, 1, 20, 0.1): from -5 up to 140
    assert "'x' in [-5, 140) per channel (Normalization 'norm': mean ± 2 std)" in r.parity["inputs"]


@pytest.mark.parametrize("kind,fmt", [("category_encoding", "tflite"),
                                      ("integer_lookup_inverse", "tflite"), ("hashed_crossing", "onnx"),
                                      ("hashed_crossing", "pt2"), ("hashing", "onnx"),
                                      ("string_lookup", "saved_model"), ("text_vectorization", "torchscript"),
                                      ("center_crop", "tvm")])
def test_refusals_name_layer_format_reason_and_working_formats(models, kind, fmt):
    with pytest.raises(UnsupportedConversionError, match=_expected_refusal(kind, fmt)):
        check_support(models[kind], fmt)


def test_one_hot_category_encoding_is_not_refused_for_tflite(models):
    check_support(models["category_one_hot"], "tflite")  # DenseBincount comes only with multi_hot / count
    with pytest.raises(UnsupportedConversionError, match="DenseBincount"):
        check_support(models["category_encoding"], "tflite")


def test_tvm_refusal_names_tvm_before_any_work(models, tmp_path):
    with pytest.raises(UnsupportedConversionError, match=r"layer 'crop' \(CenterCrop\) cannot be converted to "
                                                         r"tvm: .*std::bad_alloc.*--batch N.*--input-spec"):
        modelkit.convert(models["center_crop"], "tvm", out_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # refused in the parent: not even the ONNX model was written


@pytest.mark.slow
def test_discretization_converts_by_tf2onnx_and_compiles_with_tvm(models, tmp_path):
    """Discretization went to ONNX by the torch route (TF's Bucketize has no ONNX op) and was refused for TVM (it
    failed to compile torch.onnx's graph); keras.ops.digitize is traced as comparisons and a count
    (modelkit.converters._search), which tf2onnx and TVM take."""
    results = {r.format: r for r in modelkit.convert(models["discretization"], "onnx,tvm", out_dir=tmp_path)}
    assert results["onnx"].route["taken"] == "tf2onnx" and results["tvm"].route["taken"] == "relax"
    x = np.random.default_rng(0).uniform(2, 18, (7, 4)).astype(np.float32)  # across the bins adapted on N(10, 3)
    want = modelkit.load(models["discretization"]).predict(x)["out"]
    for fmt, r in results.items():
        np.testing.assert_allclose(modelkit.load(r.path).predict(x)["out"], want, atol=1e-5, err_msg=fmt)


# ------------------------------------------------------------------------------------------------
# The full matrix (slow): every cell converts with parity, or is refused; a refused cell really fails.

CELLS = [(kind, fmt) for kind in preprocessing_models.BUILDERS for fmt in FORMATS]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(preprocessing_models.BUILDERS))
def test_matrix_row(models, kind, tmp_path):
    refused = REFUSED.get(kind, {})
    for fmt in refused:
        with pytest.raises(UnsupportedConversionError, match=_expected_refusal(kind, fmt)):
            modelkit.convert(models[kind], fmt, out_dir=tmp_path)
    working = [f for f in FORMATS if f not in refused]
    if not working:
        return
    results = {r.format: r for r in modelkit.convert(models[kind], ",".join(working), out_dir=tmp_path)}
    for fmt in working:
        assert results[fmt].parity["ok"], (kind, fmt)


def _really_fails(kind: str, fmt: str, models: dict[str, Path], tmp_path: Path) -> str:
    backend = "torch" if fmt in ("torchscript", "pt2") else "tensorflow"
    dest = tmp_path / f"{kind}.{fmt}{'.pt' if fmt == 'torchscript' else ''}"
    return _child.run("tests.convert.preprocessing_models:try_edge",
                      {"edge": fmt, "src": str(models[kind]), "dest": str(dest)}, backend=backend, quiet=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind,fmt", [(k, f) for k, row in REFUSED.items() for f in row
                                      if k not in ("string_lookup", "text_vectorization")])
def test_refused_cell_really_fails_without_the_refusal(models, kind, fmt, tmp_path):
    outcome = _really_fails(kind, fmt, models, tmp_path)
    assert outcome != "ok", f"{kind} -> {fmt} converts with parity: drop its rule from support.RULES"
