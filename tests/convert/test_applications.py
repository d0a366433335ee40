"""keras.applications to every format: each family untrained (`weights=None`, nothing downloaded) at its
smallest input (32x32, Xception 71, the Inceptions 75), 10 classes, BatchNorm statistics set from a few
batches as training would (tests/convert/coverage_models.py). Saved under TensorFlow and converted in one
child per backend (the TF hops and TVM from their ONNX file, then the torch hops); each cell converts with
parity on inputs that make the model's outputs vary (0-255 pixels for the families that rescale inside,
inferred from their Rescaling) or is refused with a typed error; VGG16, whose caffe preprocessing runs outside
the model, passes on [0, 1) with modelkit's warning that its outputs hardly vary there. Every artifact is then
run on image-like inputs in the family's range (VGG16's: caffe) that no check used, against Keras here. CI runs
one small family; the rest are `slow`. A subset comes saved under torch and JAX (slow) and is compared with the
predictions made where it was saved.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import _child
from modelkit.converters._float64 import Float64Twin, case_atols
from modelkit.formats import manifest_path
from tests.convert.coverage_models import FAMILIES, pixels

FORMATS = ("onnx", "saved_model", "tflite", "torchscript", "pt2", "tvm")
TF_FORMATS, TORCH_FORMATS = ("onnx", "saved_model", "tflite"), ("torchscript", "pt2")
SUFFIX = {"onnx": ".onnx", "saved_model": "_saved_model", "tflite": ".tflite", "torchscript": ".torchscript.pt",
          "pt2": ".pt2", "tvm": ".tvm.so"}
CI_FAMILIES = ("MobileNetV3Small",)
OK = "ok"
# (family, format) -> OK, or the typed refusal: (error class, patterns its message must contain)
EXPECTED: dict[tuple[str, str], object] = {(f, fmt): OK for f in FAMILIES for fmt in FORMATS}
ACROSS = 1e-4  # an artifact vs Keras under TensorFlow here: the torch artifacts cross frameworks


def _jobs(src: Path, formats: tuple[str, ...], source: str = "keras") -> list[dict]:
    stem = src.name.split(".")[0]
    return [{"src": str(src), "dest": str(src.parent / f"{stem}{SUFFIX[f]}"), "source": source, "target": f}
            for f in formats]


def convert_families(names: list[str], folder: Path) -> dict[tuple[str, str], dict]:
    """Save each family under TensorFlow and convert it to every format: one TF child (saves, TF hops, TVM
    from the ONNX files), one torch child; {(family, format): run_hop's summary or typed error}."""
    srcs = {n: folder / f"{n}.keras" for n in names}
    saves = [{"name": n, "path": str(p)} for n, p in srcs.items()]
    tf_jobs = [j for p in srcs.values() for j in _jobs(p, TF_FORMATS)]
    tf_jobs += [j for p in srcs.values() for j in _jobs(p.with_suffix(".onnx"), ("tvm",), "onnx")]
    torch_jobs = [j for p in srcs.values() for j in _jobs(p, TORCH_FORMATS)]
    got = _child.run("tests.convert.coverage_models:save_and_convert", {"saves": saves, "jobs": tf_jobs},
                     backend="tensorflow")["hops"]
    got += _child.run("tests.convert.coverage_models:save_and_convert", {"saves": [], "jobs": torch_jobs},
                      backend="torch")["hops"]
    return {(Path(j["src"]).name.split(".")[0], j["target"]): r for j, r in zip(tf_jobs + torch_jobs, got)}


_RESULTS: dict[tuple[str, str], dict] = {}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Families converted on first use (CI's together, each slow one alone), kept for the module."""
    folder = tmp_path_factory.mktemp("applications")

    def get(family: str) -> dict[str, dict]:
        if (family, FORMATS[0]) not in _RESULTS:
            batch = list(CI_FAMILIES) if family in CI_FAMILIES else [family]
            _RESULTS.update(convert_families(batch, folder))
        return {fmt: _RESULTS[(family, fmt)] for fmt in FORMATS}

    return get


def _problems(family: str, fmt: str, r: dict) -> list[str]:
    """What is wrong with one cell, against EXPECTED (empty when the cell is right)."""
    want = EXPECTED[(family, fmt)]
    dest = Path(r["path"])
    if want != OK:
        cls, patterns = want
        if r.get("error") != cls:
            return [f"{fmt}: expected {cls}, got {r.get('error') or 'a conversion'}: {r.get('message', '')[:300]}"]
        missing = [p for p in patterns if not re.search(p, r["message"])]
        leftovers = dest.exists() or manifest_path(dest).exists()
        return ([f"{fmt}: message lacks {missing}: {r['message']}"] if missing else []) + \
            ([f"{fmt}: refused but left {dest}"] if leftovers else [])
    if "error" in r:
        return [f"{fmt}: {r['error']}: {r['message'][:600]}"]
    parity, out = r["parity"], []
    # the outputs really vary; where the model's preprocessing runs outside it (caffe), modelkit draws [0, 1) and
    # must say that its check proves little there (the artifacts are then judged on caffe inputs, _against_keras)
    flat = [o for o in parity["outputs"] if o["spread"] < 1e-3]
    if not parity["ok"] or (flat and not (FAMILIES[family].caffe and all(o["weak"] for o in flat))):
        out.append(f"{fmt}: parity {parity['ok']}, spread {[o['spread'] for o in parity['outputs']]}")
    raw = FAMILIES[family].raw_pixels
    # pixel-like inputs inferred from the model's own preprocessing: 0-255 from a Rescaling, or mean +- 2 std per
    # channel from a Normalization over 0-255 pixels (ConvNeXt's, ImageNet's statistics: about -11 to 240)
    pixel_like = "in [0, 255)" in parity["inputs"] or re.search(r"in \[-?[0-9.]+, 2[0-9]{2}\.?[0-9]*\) per channel "
                                                               r"\(Normalization", parity["inputs"]) is not None
    if raw != pixel_like:
        out.append(f"{fmt}: verified on {parity['inputs']}")
    return out


def _against_keras(family: str, results: dict[str, dict]) -> list[str]:
    """Every artifact that converted, on image-like inputs no check used, against Keras (TensorFlow) here, at
    ACROSS or float32's own error on these inputs where that is larger (modelkit.converters._float64)."""
    paths = {fmt: r["path"] for fmt, r in results.items() if "error" not in r}
    if not paths:
        return []
    keras_model = modelkit.load(Path(next(iter(paths.values()))).parent / f"{family}.keras")
    x = pixels(FAMILIES[family], 4, seed=7)
    (name,), (want,) = zip(*keras_model.predict(x).items())
    assert np.max(np.std(want, axis=0)) > 1e-3, f"{family}: its outputs hardly vary on {x.min()}..{x.max()} inputs"
    wide = Float64Twin.for_reference(keras_model).predict({keras_model.signature.input_names[0]: x})[name]
    (atol,) = case_atols(ACROSS, [float(np.max(np.abs(want - wide)))], [want])
    out = []
    for fmt, path in paths.items():
        (got,) = modelkit.load(path).predict(x).values()
        worst = float(np.max(np.abs(got - want)))
        if not worst <= atol:
            out.append(f"{fmt}: {worst:.2e} from Keras on image-like inputs (atol {atol:.1e})")
    return out


def _family_params() -> list:
    return [pytest.param(f, marks=() if f in CI_FAMILIES else pytest.mark.slow) for f in FAMILIES]


@pytest.mark.slow
@pytest.mark.parametrize("family", _family_params())
def test_application_to_every_format_verified_or_refused_typed(converted, family):
    results = converted(family)
    problems = [p for fmt, r in results.items() for p in _problems(family, fmt, r)]
    problems += _against_keras(family, results)
    assert not problems, f"{family}:\n" + "\n".join(problems)


# ------------------------------------------------------------------------------------------------
# saved under torch (CI) and JAX (slow): the artifacts against the predictions made where it was saved

def _foreign(family: str, backend: str, tf_formats: tuple[str, ...], torch_formats: tuple[str, ...],
             folder: Path) -> tuple[dict, dict[str, dict]]:
    """Save `family` under `backend` (and run the torch hops in that child when it is torch), then the
    other hops in one child per backend; (what save_application returned, {format: result})."""
    src = folder / f"{family}_{backend}.keras"
    tf_jobs, torch_jobs = _jobs(src, tf_formats), _jobs(src, torch_formats)
    own = torch_jobs if backend == "torch" else []
    done = _child.run("tests.convert.coverage_models:save_and_convert",
                      {"saves": [{"name": family, "path": str(src), "seed": 3}], "jobs": own}, backend=backend)
    results = dict(zip((j["target"] for j in own), done["hops"]))
    for jobs, b in ((tf_jobs, "tensorflow"), ([] if own else torch_jobs, "torch")):
        if jobs:
            hops = _child.run("tests.convert.coverage_models:save_and_convert", {"saves": [], "jobs": jobs},
                              backend=b)["hops"]
            results.update(zip((j["target"] for j in jobs), hops))
    return done["saved"][str(src)], results


def _check_foreign(saved: dict, results: dict[str, dict], backend: str) -> None:
    assert saved["backend"] == backend
    probe, want = np.asarray(saved["probe"], np.float32), np.asarray(saved["outputs"], np.float32)
    for fmt, r in results.items():
        assert "error" not in r, (fmt, r.get("message"))
        assert r["parity"]["ok"] and min(o["spread"] for o in r["parity"]["outputs"]) > 1e-3, (fmt, r["parity"])
        (got,) = modelkit.load(r["path"]).predict(probe).values()
        np.testing.assert_allclose(got, want, atol=ACROSS, err_msg=fmt)


@pytest.mark.slow
def test_application_saved_under_torch(tmp_path):
    saved, results = _foreign("MobileNetV2", "torch", ("onnx", "tflite"), ("pt2",), tmp_path)
    assert sorted(results) == ["onnx", "pt2", "tflite"]
    _check_foreign(saved, results, "torch")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["EfficientNetV2B0", "DenseNet121"])
def test_application_saved_under_jax(tmp_path, family):
    saved, results = _foreign(family, "jax", ("onnx", "saved_model", "tflite"), ("torchscript", "pt2"), tmp_path)
    _check_foreign(saved, results, "jax")


@pytest.mark.slow
def test_resnet_saved_under_torch(tmp_path):
    saved, results = _foreign("ResNet50V2", "torch", ("onnx", "saved_model"), ("torchscript",), tmp_path)
    _check_foreign(saved, results, "torch")
