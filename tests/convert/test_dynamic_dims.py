"""Dynamic non-batch dimensions (a sequence length, an image side) in every format.

Eight models users build (tests/convert/dynamic_models.py: a Conv1D + pooling classifier, a GRU with
per-step outputs, a causal Transformer block, images of any size, images of any size resized in the model, an
Embedding over token ids, a temporal convolution stack, positions for any length), saved
under TensorFlow, converted to every format in one child process per backend. Each hop either passes
parity at several lengths (1, 13, 64, or fallbacks where the model cannot run at 1) with the verified
range in the manifest, or is refused with a typed error naming the dimension or layer and the formats
that work. Every artifact that converts is then run at lengths no check used, against Keras here.
The causal block also comes saved under torch (and, slow, the GRU under JAX). The verifier itself is
tested on real ONNX graphs: per-step outputs of several lengths, a constant model, a candidate wrong
only at long lengths, a candidate that fixes the length, real samples of one length.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import _child
from modelkit.errors import ParityError, ShapeError, VacuousParityError
from modelkit.formats import manifest_path
from tests.conftest import IN_CI
from tests.helpers.cells import assert_parity, assert_refused

TF_FORMATS = ("onnx", "saved_model", "tflite")
TORCH_FORMATS = ("torchscript", "pt2", "executorch")
OK = "ok"
# (model, format) -> OK, or the typed refusal: (error class, patterns its message must contain)
EXPECTED: dict[tuple[str, str], object] = {
    **{(k, f): OK for k in ("causal", "image", "embed", "tcn", "posenc", "resize")
       for f in TF_FORMATS + TORCH_FORMATS},
    ("resize", "tvm"): OK,
    ("posenc", "tvm"): OK, ("causal", "tvm"): OK,  # their Ranges over the length counted (targets/tvm/sizes.py)
    ("image", "tvm"): OK, ("embed", "tvm"): OK, ("tcn", "tvm"): OK,
    ("conv1d", "onnx"): OK, ("conv1d", "saved_model"): OK, ("conv1d", "tflite"): OK,
    ("conv1d", "tvm"): OK,  # its strided `same` max pooling padded by TIR expressions of the length (same_pads.py)
    # torch's max_pool1d fixed the length (nc74); pooled as 2-D over a unit height, padded by hand (nc75)
    ("conv1d", "pt2"): OK,
    ("conv1d", "torchscript"): OK,  # the "same" padding's amounts traced from the input's size, not baked
    ("gru", "onnx"): OK, ("gru", "saved_model"): OK,
    ("gru", "tflite"): ("UnsupportedConversionError", [r"layer 'gru(_\d+)?' \(GRU\) cannot be converted to tflite",
                                                       "formats that convert it: onnx, saved_model"]),
    ("gru", "tvm"): ("UnsupportedConversionError", ["Loop", "runs with onnxruntime"]),
    ("gru", "torchscript"): OK,  # traced as torch's fused GRU op (modelkit.converters._torch_rnn)
    ("gru", "pt2"): OK,  # a scan over the open length (modelkit.converters._torch_rnn.scanned_recurrent)
    # executorch keeps the length open up to max_length (the batch-only edge refused all of these); its recurrent
    # layers run unrolled, over the traced length: refused, naming the fix
    ("conv1d", "executorch"): OK,
    ("gru", "executorch"): ("UnsupportedConversionError", [r"layer 'gru_cell(_\d+)?' \(GRUCell\)",
                                                           r"--input-spec frames:\?,64,6:float32"]),
}
# CI converts one cell or a few per format and per kind of open size (the whole matrix is slow: ExecuTorch's
# lowering alone is about 10 s a model): a causal mask (every engine of a sequence), a valid convolution's range
# (tflite, pt2, executorch), two open image sides (onnx, saved_model), a GRU's refusal and its fused op, an
# embedding, and the causal block saved under torch
CI_CELLS = {*((("causal", f) for f in ("onnx", "tflite", "pt2", "tvm"))), ("image", "onnx"), ("image", "saved_model"),
            ("tcn", "pt2"), ("conv1d", "tflite"), ("conv1d", "pt2"), ("conv1d", "executorch"), ("gru", "tflite"),
            ("gru", "torchscript"), ("embed", "torchscript"), ("causal_torch", "tflite"), ("causal_torch", "pt2")}
SIZES = {"conv1d": [13, 29, 64], "tcn": [13, 29, 64]}  # a valid convolution cannot run at 1: fallback 29
ATOL = {"onnx": 1e-4, "saved_model": 1e-5, "tflite": 1e-4, "torchscript": 1e-5, "pt2": 1e-5, "tvm": 1e-4,
        "executorch": 1e-4}


def _jobs(src: Path, out: Path, formats: tuple[str, ...], source: str = "keras") -> list[dict]:
    suffix = {"onnx": ".onnx", "saved_model": "_saved_model", "tflite": ".tflite", "torchscript": ".torchscript.pt",
              "pt2": ".pt2", "tvm": ".tvm.so", "executorch": ".pte"}
    kind = src.name.split(".")[0]
    return [{"src": str(src), "dest": str(out / f"{kind}{suffix[f]}"), "source": source, "target": f}
            for f in formats if not IN_CI or (kind, f) in CI_CELLS]


def _cells(cells) -> list:
    """Parameters (kind, format), those not in CI_CELLS marked slow."""
    return [c if c in CI_CELLS else pytest.param(*c, marks=pytest.mark.slow) for c in sorted(cells)]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Every model saved under TensorFlow converted to every format, and the causal block saved under
    torch converted to tflite and pt2: one torch child (saves it, runs the torch hops), then one TF child
    (the TF hops, then TVM from their ONNX files); {(model, format): run_hop's summary or typed error}."""
    from tests.convert.dynamic_models import BUILDERS, save

    folder = tmp_path_factory.mktemp("dynamic")
    for kind in BUILDERS:
        save(kind, str(folder / f"{kind}.keras"))
    torch_saved = folder / "causal_torch.keras"
    torch_jobs = [j for k in BUILDERS for j in _jobs(folder / f"{k}.keras", folder, TORCH_FORMATS)]
    torch_jobs += _jobs(torch_saved, folder, ("pt2",))
    tf_jobs = [j for k in BUILDERS for j in _jobs(folder / f"{k}.keras", folder, TF_FORMATS)]
    tf_jobs += _jobs(torch_saved, folder, ("tflite",))
    tf_jobs += [j for k in BUILDERS for j in _jobs(folder / f"{k}.onnx", folder, ("tvm",), "onnx")]
    saves = [{"kind": "causal", "path": str(torch_saved), "seed": 1}]
    got = _child.run("tests.convert.dynamic_models:convert_each", {"jobs": torch_jobs, "saves": saves},
                     backend="torch")
    got += _child.run("tests.convert.dynamic_models:convert_each", {"jobs": tf_jobs}, backend="tensorflow")
    jobs = torch_jobs + tf_jobs
    return {(Path(j["src"]).name.split(".")[0], j["target"]): r for j, r in zip(jobs, got)}


def _keras(kind: str, folder: Path):
    return modelkit.load(folder / f"{kind}.keras")


def _feed(sig, batch: int, sizes: tuple[int, ...], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for s in sig.inputs:
        it = iter(sizes)
        shape = tuple(batch if i == 0 else (next(it) if d is None else d) for i, d in enumerate(s.shape))
        out[s.name] = (rng.random(shape).astype(s.dtype) if np.dtype(s.dtype).kind == "f"
                       else rng.integers(0, 50, shape).astype(s.dtype))
    return out


@pytest.mark.parametrize("kind, fmt", _cells(EXPECTED))
def test_every_format_converts_verified_or_refuses_typed(results, kind, fmt):
    r = results[(kind, fmt)]
    want = EXPECTED[(kind, fmt)]
    dest = Path(r["path"])
    if want != OK:
        assert_refused(r, *want)
        return
    parity = assert_parity(r, ATOL[fmt])
    dims = json.loads(manifest_path(dest).read_text())["extra"]["dynamic_dims"]
    assert dims == parity["dynamic_dims"] or fmt in ("pt2", "executorch")  # they add the ranges programs accept
    name, = dims
    assert dims[name]["0"]["role"] == "batch" and dims[name]["0"]["sizes"] == [1, 7]
    open_axes = sorted(a for a in dims[name] if a != "0")
    assert open_axes == (["1", "2"] if kind in ("image", "resize") else ["1"])
    for axis in open_axes:
        entry = dims[name][axis]
        assert entry["dynamic"] is True and "fixed" not in entry
        assert entry["sizes"] == SIZES.get(kind, [1, 13, 64])
        assert entry["verified"] == [entry["sizes"][0], entry["sizes"][-1]]
        if fmt in ("pt2", "executorch"):  # a valid convolution of 3 needs 3 (size-oblivious export: 4 before, a
            # guard `!= 1`); executorch plans memory up to max_length
            assert entry["accepts"] == ([3 if kind in SIZES else 1, None if fmt == "pt2" else 128])
    if kind in SIZES and fmt == "executorch":  # sizes below the program's range (3) are not tried (nc115)
        assert "not_verified" not in dims[name]["1"] and not parity["skipped_cases"]
    elif kind in SIZES:  # a valid convolution cannot run at length 1: recorded, and fallback 29 used
        assert dims[name]["1"]["not_verified"] == [1]
        assert any("reference cannot run" in s["reason"] or s["reason"] == "the chain's source could not run at "
                   "these sizes" for s in parity["skipped_cases"])  # onnx -> tvm: keras -> onnx skipped it
    if kind in ("image", "resize"):  # the two open sides differ within every case
        assert all(c["shapes"]["image"][1] != c["shapes"]["image"][2] for c in parity["cases"])


@pytest.mark.parametrize("kind, fmt", _cells(k for k, v in EXPECTED.items() if v == OK))
def test_artifacts_run_at_sizes_no_check_used(results, kind, fmt):
    """Independent of the verifier: sizes 5 and 40 (images 5x40 and 40x5), against Keras under TensorFlow
    here (atol 1e-4: the torch artifacts cross frameworks)."""
    folder = Path(results[(kind, fmt)]["path"]).parent
    keras_model, artifact = _keras(kind, folder), modelkit.load(results[(kind, fmt)]["path"])
    assert artifact.signature.inputs[0].shape == keras_model.signature.inputs[0].shape
    for seed, sizes in enumerate(((5, 40), (40, 5))):
        feed = _feed(keras_model.signature, 3, sizes, seed)
        want, got = keras_model.predict(feed), artifact.predict(feed)
        for out in want:
            assert got[out].shape == want[out].shape
            np.testing.assert_allclose(got[out], want[out], atol=1e-4)


def test_onnx_names_every_dynamic_dim(results):
    import onnx

    proto = onnx.load(results[("causal", "onnx")]["path"])
    dims = lambda vi: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(proto.graph.input[0]) == ["batch", "tokens_1", 16]
    assert dims(proto.graph.output[0]) == ["batch", "logits_1", 10]
    image = onnx.load(results[("image", "onnx")]["path"])
    assert dims(image.graph.input[0]) == ["batch", "image_1", "image_2", 3]


@pytest.mark.parametrize("kind, name", [("tcn", "series"), ("conv1d", "signal")])
def test_pt2_runs_at_every_length_keras_runs_at_and_refuses_the_others_typed(results, kind, name):
    """The range the manifest records is the model's own (a valid convolution of 3 needs 3): at every length
    from it the program runs as Keras does (4 to 7 halve to an odd or even length, pooled to 1, nc75), below
    it a typed ShapeError where Keras itself cannot run."""
    path = results[(kind, "pt2")]["path"]
    accepts = json.loads(manifest_path(Path(path)).read_text())["extra"]["dynamic_dims"][name]["1"]["accepts"]
    assert accepts == [3, None]
    keras_model, program = _keras(kind, Path(path).parent), modelkit.load(path)
    for length in range(3, 12):
        feed = _feed(keras_model.signature, 2, (length,), length)
        for out, want in keras_model.predict(feed).items():
            np.testing.assert_allclose(program.predict(feed)[out], want, atol=1e-5, err_msg=f"length {length}")
    feed = _feed(keras_model.signature, 2, (2,), 0)
    with pytest.raises(ValueError, match="empty output"):
        keras_model.predict(feed)
    with pytest.raises(ShapeError, match=r"exported for other input shapes.*>= 3"):
        program.predict(feed)


def test_tflite_resizes_and_refuses_sizes_the_model_cannot_take(results):
    lite = modelkit.load(results[("conv1d", "tflite")]["path"])  # loads although length 1 does not fit it
    (detail,) = lite.interpreter.get_input_details()
    assert list(detail["shape_signature"]) == [-1, -1, 8]
    keras_model = _keras("conv1d", Path(results[("conv1d", "tflite")]["path"]).parent)
    with pytest.raises(ShapeError, match=r"cannot run at input shapes 'signal' \(2, 1, 8\)"):
        lite.predict(np.ones((2, 1, 8), np.float32))
    feed = _feed(keras_model.signature, 2, (21,), 0)  # the interpreter recovers at the next size
    np.testing.assert_allclose(lite.predict(feed)["probs"], keras_model.predict(feed)["probs"], atol=1e-4)


# ------------------------------------------------------------------------------------------------
# .keras files saved under torch (in CI, with the others) and JAX (slow: two more children)

def _check_foreign(r: dict, src: Path) -> None:
    assert "error" not in r, r.get("message")
    (name, dims), = r["parity"]["dynamic_dims"].items()
    assert r["parity"]["ok"] and dims["1"]["sizes"] == [1, 13, 64] and dims["1"]["dynamic"]
    keras_model, artifact = modelkit.load(src), modelkit.load(r["path"])
    feed = _feed(keras_model.signature, 2, (37,), 3)
    for out, want in keras_model.predict(feed).items():
        np.testing.assert_allclose(artifact.predict(feed)[out], want, atol=1e-4)


@pytest.mark.parametrize("fmt", ["tflite", "pt2"])
def test_causal_block_saved_under_torch_converts_at_every_length(results, fmt):
    r = results[("causal_torch", fmt)]
    _check_foreign(r, Path(r["path"]).parent / "causal_torch.keras")


@pytest.fixture(scope="module")
def jax_gru(tmp_path_factory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("dynamic_jax")
    gru = folder / "gru_jax.keras"
    _child.run("tests.convert.dynamic_models:save", {"kind": "gru", "path": str(gru), "seed": 2},
               backend="jax", quiet=True)
    tf_jobs, torch_jobs = _jobs(gru, folder, ("onnx",)), _jobs(gru, folder, ("pt2",))
    got = _child.run("tests.convert.dynamic_models:convert_each", {"jobs": tf_jobs}, backend="tensorflow")
    got += _child.run("tests.convert.dynamic_models:convert_each", {"jobs": torch_jobs}, backend="torch")
    return {j["target"]: r for j, r in zip(tf_jobs + torch_jobs, got)}


@pytest.mark.slow
def test_gru_saved_under_jax_converts_to_onnx_and_pt2_at_every_length(jax_gru):
    for fmt in ("onnx", "pt2"):
        _check_foreign(jax_gru[fmt], Path(jax_gru[fmt]["path"]).parent / "gru_jax.keras")


# ------------------------------------------------------------------------------------------------
# The verifier on real ONNX graphs (onnxruntime), no framework: fast

def _onnx(path: Path, body: str, seq: object = "seq", w_scale: float = 1.0) -> Path:
    """x (batch, seq, 4) -> `body`: 'per_step' (x @ W), 'mean' (mean over time @ W), 'first16' (the mean of
    the first 16 steps only: right for short sequences, wrong for long ones), 'crop' (x[:, 1:-1] @ W, as Keras'
    Cropping1D((1, 1)): an empty output at lengths 1 and 2), 'crop_mean' (the mean of x[:, 1:-1] as TensorFlow takes
    it, a sum over a count, @ W: all NaN at lengths 1 and 2)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = (np.random.default_rng(0).standard_normal((4, 3)) * w_scale).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([1], np.int64), "axes"),
             numpy_helper.from_array(np.array([0], np.int64), "start"),
             numpy_helper.from_array(np.array([16], np.int64), "end"),
             numpy_helper.from_array(np.array([-1], np.int64), "last")]
    if body == "per_step":
        nodes, out_shape = [helper.make_node("MatMul", ["x", "W"], ["y"])], ["batch", "seq_out", 3]
    elif body == "crop":
        nodes = [helper.make_node("Slice", ["x", "axes", "last", "axes"], ["xs"]),  # starts [1] = axes [1]
                 helper.make_node("MatMul", ["xs", "W"], ["y"])]
        out_shape = ["batch", "seq_out", 3]
    elif body == "crop_mean":
        inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
        inits.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
        nodes = [helper.make_node("Slice", ["x", "axes", "last", "axes"], ["xs"]),
                 helper.make_node("ReduceSum", ["xs", "axes"], ["total"], keepdims=0),
                 helper.make_node("Mul", ["xs", "zero"], ["xz"]), helper.make_node("Add", ["xz", "one"], ["ones"]),
                 helper.make_node("ReduceSum", ["ones", "axes"], ["count"], keepdims=0),
                 helper.make_node("Div", ["total", "count"], ["m"]), helper.make_node("MatMul", ["m", "W"], ["y"])]
        out_shape = ["batch", 3]
    else:
        src = "x"
        nodes = []
        if body == "first16":
            nodes.append(helper.make_node("Slice", ["x", "start", "end", "axes"], ["xs"]))
            src = "xs"
        nodes += [helper.make_node("ReduceMean", [src, "axes"], ["m"], keepdims=0),
                  helper.make_node("MatMul", ["m", "W"], ["y"])]
        out_shape = ["batch", 3]
    graph = helper.make_graph(nodes, body, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", seq, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_per_step_outputs_of_several_lengths_compare_per_case(tmp_path):
    from modelkit.converters.verify import verify_artifacts

    a, b = _onnx(tmp_path / "a.onnx", "per_step"), _onnx(tmp_path / "b.onnx", "per_step")
    report = verify_artifacts(a, b, atol=1e-6)
    assert report.ok and sorted({c["shapes"]["x"][1] for c in report.cases}) == [1, 13, 64]
    assert report.dynamic_dims["x"]["1"] == {"dynamic": True, "verified": [1, 64], "sizes": [1, 13, 64]}
    assert report.outputs[0].spread > 0.1 and all(c["max_abs"]["y"] == 0.0 for c in report.cases)


def test_constant_per_step_model_is_vacuous(tmp_path):
    from modelkit.converters.verify import verify_artifacts

    a = _onnx(tmp_path / "zero.onnx", "per_step", w_scale=0.0)
    with pytest.raises(VacuousParityError, match="constant across 8 different inputs"):
        verify_artifacts(a, a, atol=1e-6)


def test_a_size_where_the_reference_output_is_empty_is_skipped_not_compared(tmp_path):
    """nc76: a Cropping1D((1, 1)) over an open length gives ONNX an empty output at length 1 (Keras raises there);
    TVM's library then failed with std::bad_alloc, and the TVM hop was refused with "ran out of memory ... needs at
    least 8 bytes". An empty reference output is nothing to compare: the size is skipped, as one the reference
    cannot run at, and the fallback size verified instead."""
    from modelkit.converters.verify import verify_artifacts

    a = _onnx(tmp_path / "crop.onnx", "crop")
    report = verify_artifacts(a, a, atol=1e-6)
    assert report.ok and sorted({c["shapes"]["x"][1] for c in report.cases}) == [13, 29, 64]
    assert report.dynamic_dims["x"]["1"]["not_verified"] == [1]
    assert report.skipped_cases[0]["reason"] == "the reference's output 'y' is empty at these sizes: nothing to compare"
    if importlib.util.find_spec("tvm") is not None:
        (result,) = modelkit.convert(a, "tvm", out_dir=tmp_path / "tvm")
        assert result.parity["dynamic_dims"]["x"]["1"]["verified"] == [13, 64]
    # Keras' any-size MobileNetV2 under TensorFlow "runs" at 13x64: its maps run empty and its mean is NaN (nc76)
    nan = _onnx(tmp_path / "crop_mean.onnx", "crop_mean")
    report = verify_artifacts(nan, nan, atol=1e-6)
    assert report.ok and report.dynamic_dims["x"]["1"]["not_verified"] == [1]
    assert report.skipped_cases[0]["reason"] == ("the reference's output 'y' is all NaN at these sizes: nothing to "
                                                 "compare")


def test_nan_against_a_number_is_an_infinite_error_not_zero(tmp_path):
    """nc76: a NaN reference against a candidate's number was reported as "max abs error 0.000e+00 > atol 1e-05"
    (the NaN difference dropped by nanmax); such a case is an infinite error."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from modelkit.converters.verify import verify_artifacts

    def graph(name: str, absolute: bool) -> Path:  # sqrt(x - 0.5): NaN below 0.5; sqrt(|x - 0.5|) a number
        nodes = [helper.make_node("Sub", ["x", "half"], ["d"])]
        nodes += [helper.make_node("Abs", ["d"], ["a"]), helper.make_node("Sqrt", ["a"], ["y"])] if absolute else \
            [helper.make_node("Sqrt", ["d"], ["y"])]
        g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                              [numpy_helper.from_array(np.array(0.5, np.float32), "half")])
        path = tmp_path / f"{name}.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
        return path

    report = verify_artifacts(graph("nan", False), graph("number", True), atol=1e-5, raise_on_failure=False)
    assert not report.ok and report.outputs[0].max_abs == float("inf")
    reason = report.outputs[0].reason
    assert reason.startswith("the source gives NaN at ") and "where the converted model gives numbers" in reason
    assert "max abs error inf" not in reason and "select" not in reason  # the hint is for the converted side

    # the usual case (nc102): the artifact gives NaN where the source gives numbers; the reason counts them and
    # names the likely cause, the summary says NaN instead of "max abs error inf"
    report = verify_artifacts(graph("number", True), graph("nan", False), atol=1e-5, raise_on_failure=False)
    reason = report.outputs[0].reason
    count, total = (int(t) for t in reason.split("NaN at ")[1].split(" values")[0].split(" of "))
    assert 0 < count < total and total % 4 == 0, reason
    assert reason.startswith("the converted model gives NaN at ") and "where the source gives numbers" in reason
    assert "where / select" in reason and "max abs error" not in reason
    assert "NaN / inf against numbers on 'y'" in report.summary()
    # nc105: the statistics beside the reason read "max rel 0, cosine 1.000000" (NaN-blind); now inf and nan,
    # and --json stays strict JSON (no bare Infinity / NaN)
    out = report.outputs[0]
    assert out.max_rel == float("inf") and np.isnan(out.cosine)
    from click.testing import CliRunner

    from modelkit.cli import main

    args = ["verify", str(tmp_path / "number.onnx"), str(tmp_path / "nan.onnx")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "Traceback" not in res.output
    row = next(line for line in res.output.splitlines() if line.lstrip("│| ").startswith("y "))
    assert "inf" in row and "nan" in row and "1.000000" not in row, res.output
    res = CliRunner().invoke(main, [*args, "--json"])
    doc = json.loads(res.output[:res.output.rindex("}") + 1], parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert doc["outputs"][0]["max_abs"] == "inf" and doc["outputs"][0]["cosine"] == "nan"


def test_candidate_wrong_only_at_long_lengths_fails(tmp_path):
    from modelkit.converters.verify import verify_artifacts

    ref, cand = _onnx(tmp_path / "mean.onnx", "mean"), _onnx(tmp_path / "first16.onnx", "first16")
    report = verify_artifacts(ref, cand, atol=1e-5, raise_on_failure=False)
    assert not report.ok and report.outputs[0].max_abs > 1e-3
    by_len = {c["shapes"]["x"][1]: c["max_abs"]["y"] for c in report.cases}
    assert by_len[1] < 1e-6 and by_len[13] < 1e-6 and by_len[64] > 1e-3  # only the long case tells
    assert report.outputs[0].reason.endswith(" at input shapes 'x' (7, 64, 4)")  # the worst case, named
    assert report.cases[report.outputs[0].failed_case]["shapes"]["x"] == [7, 64, 4]
    with pytest.raises(ParityError, match=r"max abs error .* at input shapes 'x' \(7, 64, 4\)"):
        report.raise_if_failed()


def test_a_lossy_artifact_straying_at_other_lengths_is_told_to_fix_the_size_it_deploys(tmp_path):
    """Calibrated and judged at its samples' length, an int8 model is also checked at other lengths (nc45's TCN
    strayed at length 1): the refusal says so and gives the --input-spec that fixes the samples' length."""
    from modelkit.converters.gate_verdict import open_size_hint
    from modelkit.converters.verify import verify_artifacts
    from modelkit.runtime import load

    ref, cand = _onnx(tmp_path / "mean.onnx", "mean"), _onnx(tmp_path / "first16.onnx", "first16")
    samples = {"x": np.random.default_rng(1).random((9, 10, 4)).astype(np.float32)}
    report = verify_artifacts(ref, cand, atol=1e-5, data=samples, raise_on_failure=False)
    assert [c["shapes"]["x"][1] for c in report.cases][:2] == [10, 10]  # the samples' own length first
    sig = load(ref).signature
    assert open_size_hint(report, sig) == (
        ". An open dimension is checked at other sizes than the samples' too, and a quantized model is calibrated "
        "and judged at theirs (10): fix the size you deploy (e.g. --input-spec x:?,10,4:float32), or keep it "
        "open in float32")
    same = verify_artifacts(ref, ref, atol=1e-5, data=samples, raise_on_failure=False)
    assert same.ok and open_size_hint(same, sig) == ""  # nothing failed: nothing to say


def test_candidate_that_fixes_the_length_is_compared_at_it_and_recorded_fixed(tmp_path):
    from modelkit.converters.verify import verify_artifacts

    ref, cand = _onnx(tmp_path / "any.onnx", "mean"), _onnx(tmp_path / "fixed.onnx", "mean", seq=13)
    report = verify_artifacts(ref, cand, atol=1e-6)
    assert report.ok and {c["shapes"]["x"][1] for c in report.cases} == {13}
    assert report.dynamic_dims["x"]["1"] == {"dynamic": False, "verified": [13, 13], "sizes": [13], "fixed": 13}


def test_real_samples_of_one_length_are_joined_by_seeded_lengths(tmp_path):
    from modelkit.converters.verify import verify_artifacts

    a = _onnx(tmp_path / "a.onnx", "per_step")
    samples = {"x": np.random.default_rng(4).random((9, 10, 4)).astype(np.float32)}
    report = verify_artifacts(a, a, atol=1e-6, data=samples, data_label="samples.npz")
    assert [c["shapes"]["x"][1] for c in report.cases] == [10, 10, 1, 1, 13, 13, 64, 64]
    assert report.dynamic_dims["x"]["1"]["sizes"] == [1, 10, 13, 64]
    assert "samples.npz" in report.inputs and report.inputs.endswith("open dimensions also at other sizes, seeded")


def test_tvm_with_a_fixed_batch_refuses_an_open_length_before_compiling(tmp_path):
    pytest.importorskip("tvm")
    from modelkit.errors import UnsupportedConversionError
    from modelkit.targets import compile

    src = _onnx(tmp_path / "mean.onnx", "mean")
    with pytest.raises(UnsupportedConversionError, match=r"input 'x' \(\?, \?, 4\): dimension 1 is dynamic.*"
                                                         r"fixed batch \(batch=2.*fixed shapes only: fix them with "
                                                         r"--input-spec x:\?,64,4:float32, .*onnx \(onnxruntime\)"):
        compile(src, target="server-cpu", batch=2, out=tmp_path / "mean.tvm.so")
    assert not list(tmp_path.glob("mean.tvm.so*"))
