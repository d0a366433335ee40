"""Routes instead of dead ends: a pair with several routes (modelkit.converters.registry.ROUTES) tries them in
order, records the one taken and why the others failed, and refuses typed, with every route's reason,
only when all fail.

The matrix: models users build (tests/convert/route_models.py: stacked LSTM/GRU/SimpleRNN returning
sequences, Bidirectional(LSTM), Embedding(mask_zero=True) + Bidirectional(LSTM), Masking + GRU, a GRU over
any length, GELU three ways, an erf gate, a Discretization front end) saved under TensorFlow, each to
every format the way convert() runs it: the routes the model's config admits (routes.hop_routes), those
of one backend in one child, the rest in the next child with what was tried. Every cell converts with
parity by some route, or is refused with a typed error naming the layer, the format and what works.
Artifacts are then run at batches and lengths no check used, against Keras. End to end through
modelkit.convert and the CLI: the ONNX fallback to torch.onnx, --route, --input-spec fixing a length to
unroll at. The unrolled loop itself is checked against Keras' loop on masks, directions and states.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit import _child
from modelkit.converters.routes import combined_error, describe, hop_routes, next_batch
from modelkit.errors import (
    AccuracyError,
    ConversionError,
    InputError,
    ParityError,
    RouteNotApplicableError,
    UnsupportedConversionError,
)
from modelkit.formats import Format, manifest_path
from modelkit.keras_io.files import check_keras_archive
from tests.conftest import IN_CI
from tests.helpers.cells import assert_parity, assert_refused

MODULE = "tests.convert.route_models"
SUFFIX = {"onnx": ".onnx", "saved_model": "_saved_model", "tflite": ".tflite", "torchscript": ".torchscript.pt",
          "pt2": ".pt2"}
ATOL = {"onnx": 1e-4, "saved_model": 1e-5, "tflite": 1e-4, "torchscript": 1e-5, "pt2": 1e-5}
U = "UnsupportedConversionError"
RNN_OK = {"onnx": "tf2onnx", "saved_model": "export-archive", "tflite": "unrolled", "torchscript": "trace"}
PLAIN_OK = {"onnx": "tf2onnx", "saved_model": "export-archive", "tflite": "converter", "torchscript": "trace",
            "pt2": "export"}
# (kind, format) -> the route it converts by, or (error class, patterns its message must contain)
EXPECTED: dict[tuple[str, str], object] = {
    **{("stacked", f): r for f, r in {**RNN_OK, "pt2": "unrolled"}.items()},
    # a masked LSTM / GRU runs as torch's scan under torch.export (converters/_torch_rnn.py)
    **{("masked_bilstm", f): r for f, r in {**RNN_OK, "pt2": "export"}.items()},
    **{("masking_gru", f): r for f, r in {**RNN_OK, "pt2": "export"}.items()},
    ("gru_open", "onnx"): "tf2onnx", ("gru_open", "saved_model"): "export-archive",
    ("gru_open", "tflite"): "loop",  # one builtin WHILE over any length (converters/_tf_loop.py)
    ("masked_open", "tflite"): "loop", ("masked_open", "pt2"): "export", ("masked_open", "torchscript"): "trace",
    ("masked_pool", "pt2"): "export", ("masked_pool", "torchscript"): "trace",  # checks that meet NaN (padding)
    ("gru_open", "torchscript"): "trace",  # traced as torch's fused GRU op: any length (converters/_torch_rnn.py)
    ("gru_open", "pt2"): "export",  # a scan over the open length (converters/_torch_rnn.py)
    **{("gelu", f): r for f, r in PLAIN_OK.items()},
    **{("erf", f): r for f, r in PLAIN_OK.items()},  # TFLite: erf from Exp and arithmetic (converters/_tf_elementwise)
    ("flags", "tflite"): (U, [r"layer 'flags' \(BitFlags\) cannot be converted to tflite: it runs TensorFlow op\(s\) ",
                              "BitwiseAnd", "which are no TFLite builtin ops",
                              "keeps every TensorFlow op: saved_model"]),
    **{("discretize", f): r for f, r in PLAIN_OK.items()},
    ("flags", "onnx"): "torch",  # tf2onnx writes BitwiseAnd at opset 17
}
EXPECTED.update({(k, f): r for k in ("lstm", "gru", "simple_rnn", "bilstm")
                 for f, r in {**RNN_OK, "pt2": "unrolled"}.items()})
EXPECTED.update({("lstm", "pt2"): "export", ("bilstm", "pt2"): "export"})  # torch's fused LSTM kernel
FORCED = ("gelu", "erf", "masked_bilstm")  # also converted to onnx by the torch route alone (--route torch)
# CI: the cells where a second route or a combined refusal is the answer (the end-to-end tests below add
# flags -> onnx and a length from --input-spec); the whole matrix is slow
CI_CELLS = {("masked_bilstm", "tflite"), ("masked_open", "tflite"), ("masked_pool", "pt2"), ("flags", "tflite"),
            ("gelu", "onnx"), ("masked_bilstm", "onnx:torch")}
# the slow tests' cells besides (run where CI is not set: `matrix` converts these too there)
LOCAL_CELLS = CI_CELLS | {("masked_bilstm", "pt2"), ("masking_gru", "tflite"), ("masking_gru", "pt2"),
                          ("gru_open", "tflite"), ("masked_open", "pt2"), ("masked_open", "torchscript"),
                          ("masked_pool", "torchscript")}
MATRIX_CELLS = CI_CELLS if IN_CI else LOCAL_CELLS
FIXED = {"stacked": 12, "bilstm": 12, "masked_bilstm": 10, "masking_gru": 12, "lstm": 12, "gru": 10, "simple_rnn": 9}


def _plan(src: Path, fmt: str) -> list[list[str]]:
    """The routes convert() would try for this cell, split into runs of one backend (one child each)."""
    specs, _ = hop_routes(Format.KERAS, Format(fmt), set(), {}, check_keras_archive(src))
    runs, i = [], 0
    while i < len(specs):
        batch = next_batch(specs, i)
        runs.append([e.route for e in batch] + [f"backend={batch[0].backend}"])
        i += len(batch)
    return runs


def _run_matrix(folder: Path, cells: list[tuple[str, str]], padded: str | None = None,
                saves_under: str = "tensorflow") -> dict[tuple[str, str], dict]:
    """Run the cells ((kind, format), or (kind, 'onnx:torch') for the torch route alone) the way convert()
    runs them: a tensorflow child, then a torch child with the routes left; {cell: summary or typed error}."""
    kinds = sorted({k for k, _ in cells} | {"discretize", "flags", "gelu", "dead_gru", "gru_open"})  # end-to-end tests
    saves = [{"kind": k, "path": str(folder / f"{k}.keras")} for k in kinds]
    _child.run(f"{MODULE}:save_all", {"saves": saves}, backend=saves_under, quiet=True)
    pending = {}
    for kind, fmt in cells:
        src = folder / f"{kind}.keras"
        target, _, forced = fmt.partition(":")
        runs = [[forced, "backend=torch"]] if forced else _plan(src, target)
        job = {"src": str(src), "dest": str(folder / f"{kind}{'.' + forced if forced else ''}{SUFFIX[target]}"),
               "source": "keras", "target": target}
        if kind == "masking_gru" and padded:
            job["data"] = padded  # zero-padded frames, so the mask is exercised
        pending[(kind, fmt)] = (job, runs)
    results: dict[tuple[str, str], dict] = {}
    for backend in ("tensorflow", "torch"):
        todo = [(cell, job, runs) for cell, (job, runs) in pending.items()
                if runs and runs[0][-1] == f"backend={backend}"]
        jobs = [{**job, "routes": runs[0][:-1], "last": len(runs) == 1,
                 "tried": results.get(cell, {}).get("failed", [])} for cell, job, runs in todo]
        got = _child.run(f"{MODULE}:convert_each", {"jobs": jobs}, backend=backend) if jobs else []
        for (cell, job, runs), r in zip(todo, got):
            results[cell] = r
            pending[cell] = (job, runs[1:] if "failed" in r else [])  # the next backend's routes, if needed
    return results


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, monkeypatch_module) -> dict[tuple[str, str], dict]:
    from tests.convert.route_models import padded_frames

    folder = tmp_path_factory.mktemp("routes")
    return _run_matrix(folder, sorted(MATRIX_CELLS), padded=padded_frames(str(folder / "padded.npz")))


@pytest.fixture(scope="module")
def full_matrix(tmp_path_factory, monkeypatch_module) -> dict[tuple[str, str], dict]:
    from tests.convert.route_models import padded_frames

    folder = tmp_path_factory.mktemp("routes_all")
    cells = sorted(EXPECTED) + [(k, "onnx:torch") for k in FORCED]
    return _run_matrix(folder, cells, padded=padded_frames(str(folder / "padded.npz")))


@pytest.fixture(scope="module")
def monkeypatch_module():
    """Every converting child imports the module that registers the custom layers (MODELKIT_IMPORTS)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELKIT_IMPORTS", MODULE)
        yield mp


def _check_cell(r: dict, kind: str, fmt: str) -> None:
    want = EXPECTED[(kind, fmt)]
    dest = Path(r["path"])
    if isinstance(want, tuple):
        assert_refused(r, *want)
        return
    parity = assert_parity(r, ATOL[fmt])
    route = json.loads(manifest_path(dest).read_text())["extra"]["route"]
    assert route["taken"] == r["route"]["taken"] == want
    order = [s.route for s in modelkit.converters.registry.routes(Format.KERAS, Format(fmt))]
    assert [t["route"] for t in route["tried"]] == order[: order.index(want)]  # every route before it failed
    assert all(t["type"].endswith("Error") and t["error"] for t in route["tried"])
    name, = parity["dynamic_dims"]
    assert parity["dynamic_dims"][name]["0"] == {"dynamic": True, "verified": [1, 7], "sizes": [1, 7],
                                                 "role": "batch"}
    if want == "unrolled":  # the length it was unrolled at, from the model's inputs
        assert route["unrolled"]["layers"] and route["unrolled"]["steps"] == [FIXED[kind]]
        if fmt == "tflite":
            assert route["unrolled"]["sequence_lengths"] == {name: FIXED[kind]}
    if want == "loop":  # verified at several lengths, the length left open
        assert route["loop"]["layers"] and route["tried"][-1]["route"] == "unrolled"
        assert "its input has an open time axis" in route["tried"][-1]["error"]
        assert parity["dynamic_dims"][name]["1"]["dynamic"] and parity["dynamic_dims"][name]["1"]["sizes"][0] == 1


@pytest.mark.parametrize("kind, fmt", sorted(c for c in MATRIX_CELLS if c in EXPECTED))
def test_route_cells_convert_with_parity_or_are_refused_typed(matrix, kind, fmt):
    _check_cell(matrix[(kind, fmt)], kind, fmt)


@pytest.mark.slow
@pytest.mark.parametrize("kind, fmt", sorted(EXPECTED))
def test_every_cell_converts_with_parity_by_some_route_or_is_refused_typed(full_matrix, kind, fmt):
    _check_cell(full_matrix[(kind, fmt)], kind, fmt)


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if (k, "onnx:torch") not in CI_CELLS
                                  else k for k in FORCED])
def test_torch_route_to_onnx_converts_gelu_erf_and_a_masked_bilstm_with_parity(request, kind):
    cells = request.getfixturevalue("matrix" if (kind, "onnx:torch") in MATRIX_CELLS else "full_matrix")
    r = cells[(kind, "onnx:torch")]
    assert "error" not in r, r
    assert r["route"]["taken"] == "torch" and r["route"]["tried"] == []
    assert r["parity"]["ok"] and max(o["max_abs"] for o in r["parity"]["outputs"]) <= 1e-4
    (dims,) = r["parity"]["dynamic_dims"].values()
    assert dims["0"]["dynamic"] and dims["0"]["sizes"] == [1, 7]
    if kind == "masked_bilstm":  # Keras' masked loop under torch would fix the batch: modelkit's loop ran
        assert r["route"]["unrolled"] == {"layers": ["bilstm"], "steps": [10]}


def _keras(path: Path):
    return modelkit.load(path)


@pytest.mark.slow
def test_unrolled_artifacts_match_keras_at_other_batches_on_padded_and_masked_inputs(matrix):
    """Independent of the verifier: batches 3 and 11, sequences padded at the end and in the middle."""
    from tests.convert.route_models import padded_frames

    folder = Path(matrix[("masking_gru", "tflite")]["path"]).parent
    rng = np.random.default_rng(5)
    for kind in ("masking_gru", "masked_bilstm"):
        reference = _keras(folder / f"{kind}.keras")
        for fmt in ("tflite", "pt2") + (("onnx:torch",) if kind == "masked_bilstm" else ()):
            artifact = modelkit.load(matrix[(kind, fmt)]["path"])
            assert artifact.signature.inputs == reference.signature.inputs
            for batch in (3, 11):
                if kind == "masking_gru":
                    x = np.load(padded_frames(str(folder / f"p{batch}.npz"), rows=batch, seed=batch))["x"]
                elif kind == "masked_bilstm":
                    x = rng.integers(1, 40, (batch, 10)).astype(np.int32)
                    x[:, 7:] = 0
                    x[0, 2:5] = 0  # a gap inside the sequence
                    x[1] = 0  # all padding
                else:
                    x = rng.normal(size=(batch, 12, 6)).astype(np.float32)
                want = reference.predict(x)
                for out, value in artifact.predict(x).items():
                    np.testing.assert_allclose(value, want[out], atol=1e-4, err_msg=f"{kind} {fmt} {batch}")
    lite = modelkit.load(matrix[("masking_gru", "tflite")]["path"])
    (detail,) = lite.interpreter.get_input_details()
    assert list(detail["shape_signature"]) == [-1, 12, 6]  # the batch stays dynamic, the length is the model's


@pytest.mark.slow
def test_a_route_failing_parity_hands_over_and_every_failure_is_kept(matrix, tmp_path):
    """A dead model (a GRU under a zero head): the converter refuses the GRU, the unrolled route converts but parity
    proves nothing (VacuousParityError); the error is that ParityError with both routes' reasons, its artifact kept
    under its route's name. The loop route is not tried: the reference proves nothing on any route."""
    src = Path(matrix[("gelu", "onnx")]["path"]).parent / "dead_gru.keras"
    (r,) = _child.run(f"{MODULE}:convert_each", {"jobs": [
        {"src": str(src), "dest": str(tmp_path / "dead_gru.tflite"), "source": "keras", "target": "tflite",
         "routes": ["converter", "unrolled", "loop"]}]}, backend="tensorflow")
    assert r.get("error") == "VacuousParityError", r
    assert re.search(r"no route converts keras to tflite: route 'converter' \(UnsupportedConversionError\): "
                     r"layer 'gru' \(GRU\).*; route 'unrolled' \(VacuousParityError\): .*constant across.*"
                     r"--data samples.npz, keyed by input name\)$", r["message"])
    kept = tmp_path / "dead_gru.unrolled.parity-failed.tflite"
    route = json.loads(manifest_path(kept).read_text())["extra"]["route"]
    assert kept.is_file() and route["taken"] == "unrolled" and route["tried"][0]["route"] == "converter"
    assert not (tmp_path / "dead_gru.loop.parity-failed.tflite").exists()
    assert not (tmp_path / "dead_gru.tflite").exists()


@pytest.mark.slow
def test_the_converter_route_failing_prints_one_line_not_the_converters_diagnostics(matrix, tmp_path, capfd):
    """The TFLite converter's MLIR passes print every error to file descriptor 2; the hand-over to the next
    route is one line naming the layer, and the converter's own lines stay out of the user's terminal."""
    src = Path(matrix[("gelu", "onnx")]["path"]).parent / "gru_open.keras"
    capfd.readouterr()
    (r,) = modelkit.convert(src, "tflite", out_dir=tmp_path)  # the length is open: the 'loop' route takes it
    err = capfd.readouterr().err
    assert r.route["taken"] == "loop" and [t["route"] for t in r.route["tried"]] == ["converter", "unrolled"]
    assert "route 'converter' failed (UnsupportedConversionError): layer 'gru'" in err, err
    assert "loc(callsite" not in err and "TensorListReserve" not in err, err


@pytest.mark.slow
def test_open_length_artifacts_match_keras_at_lengths_and_batches_no_check_used(matrix):
    """Independent of the verifier: the 'loop' TFLite artifacts, the scanned .pt2 and the TorchScript file
    with its scripted masked loop at lengths 1, 5 and 41,
    batches 1 and 3, token ids padded at the end, in the middle and all padding (a mask over an open
    length, both directions, a Bidirectional returning sequences: zeros at masked steps)."""
    folder = Path(matrix[("masked_open", "tflite")]["path"]).parent
    rng = np.random.default_rng(9)
    for kind, fmt in (("masked_open", "tflite"), ("masked_open", "pt2"), ("masked_open", "torchscript"),
                      ("gru_open", "tflite")):
        reference, artifact = _keras(folder / f"{kind}.keras"), modelkit.load(matrix[(kind, fmt)]["path"])
        if fmt == "tflite":
            (detail,) = artifact.interpreter.get_input_details()
            assert list(detail["shape_signature"]) == ([-1, -1] if kind == "masked_open" else [-1, -1, 6])
        for batch, length in ((1, 1), (3, 5), (3, 41), (1, 41)):
            if kind == "masked_open":
                x = rng.integers(1, 40, (batch, length)).astype(np.int32)
                x[:, length * 3 // 4:] = 0
                x[0, length // 3: length // 2] = 0
                if batch > 1:
                    x[-1] = 0  # all padding
            else:
                x = rng.normal(size=(batch, length, 6)).astype(np.float32)
            want = reference.predict(x)["probs"]
            np.testing.assert_allclose(artifact.predict(x)["probs"], want, atol=1e-4, err_msg=f"{kind} {fmt} {x.shape}")


# ------------------------------------------------------------------------------------------------
# End to end: modelkit.convert and the CLI, real children

@pytest.mark.slow
def test_onnx_falls_back_to_the_torch_route_cli_json_and_manifest(matrix, tmp_path, monkeypatch_module):
    from click.testing import CliRunner

    from modelkit.cli import main

    src = Path(matrix[("gelu", "onnx")]["path"]).parent / "flags.keras"
    out = CliRunner().invoke(main, ["convert", str(src), "--to", "onnx", "--out", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    (res,) = json.loads(out.stdout[out.stdout.index("["):])
    assert res["route"]["taken"] == "torch"
    (tried,) = res["route"]["tried"]
    assert tried["route"] == "tf2onnx" and tried["type"] == "ConversionError"
    assert "No Op registered for BitwiseAnd with domain_version of 17" in tried["error"], tried
    manifest = json.loads(manifest_path(Path(res["path"])).read_text())
    assert manifest["extra"]["route"] == res["route"] and manifest["opset"] == 18
    assert manifest["chain"][-1]["converter"] == "modelkit.converters.keras_onnx_torch:keras_to_onnx_torch"
    import onnx

    dims = [d.dim_param or d.dim_value for d in onnx.load(res["path"]).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1]
    x = np.array([[0], [1], [6], [9], [15]], np.int32)
    np.testing.assert_allclose(modelkit.load(res["path"]).predict(x)["out"], _keras(src).predict(x)["out"],
                               atol=1e-5)


def test_unknown_route_names_are_refused_before_any_work(matrix, tmp_path):
    src = Path(matrix[("gelu", "onnx")]["path"]).parent / "gelu.keras"
    with pytest.raises(UnsupportedConversionError, match=r"no planned conversion has a route named 'tvm'; routes "
                                                         r"per pair \(tried in this order\): keras->onnx: tf2onnx, "
                                                         r"torch; .*keras->tflite: converter, unrolled"):
        modelkit.convert(src, "onnx", out_dir=tmp_path, options={"route": "tvm"})
    with pytest.raises(UnsupportedConversionError, match="no planned conversion has a route named 'unrolled'"):
        modelkit.convert(src, "onnx,saved_model", out_dir=tmp_path, options={"route": "unrolled"})
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_route_option_forces_the_torch_route(matrix, tmp_path, monkeypatch_module):
    src = Path(matrix[("gelu", "onnx")]["path"]).parent / "gelu.keras"
    (r,) = modelkit.convert(src, "onnx", out_dir=tmp_path, options={"route": "torch"})
    assert r.route == {"taken": "torch", "tried": []} and r.parity["ok"] and r.max_abs <= 1e-4


@pytest.mark.slow
def test_input_spec_fixes_the_length_an_open_gru_is_unrolled_at(matrix, tmp_path, monkeypatch_module):
    src = Path(matrix[("gru_open", "tflite")]["path"]).parent / "gru_open.keras"
    (r,) = modelkit.convert(src, "tflite", out_dir=tmp_path, input_spec=["frames:?,16,6"])
    assert r.route["taken"] == "unrolled" and r.route["unrolled"]["sequence_lengths"] == {"frames": 16}
    assert [t["route"] for t in r.route["tried"]] == ["converter"]
    artifact = modelkit.load(r.path)
    assert artifact.signature.inputs[0].shape == (None, 16, 6)
    x = np.random.default_rng(1).random((4, 16, 6)).astype(np.float32)
    np.testing.assert_allclose(artifact.predict(x)["probs"], _keras(src).predict(x)["probs"], atol=1e-4)
    extra = json.loads(manifest_path(Path(r.path)).read_text())["extra"]
    assert extra["input_spec"] == [{"name": "frames", "shape": [None, 16, 6], "dtype": "float32"}]


def test_input_spec_may_only_fix_open_dims_of_a_model_that_defines_inputs(tmp_path):
    from modelkit._backend import import_keras
    from modelkit.keras_io.inputs import ensure_inputs, parse_input_specs

    keras = import_keras("tensorflow")
    x = keras.Input((None, 6), name="frames")
    model = keras.Model(x, keras.layers.Dense(2, name="out")(x))
    fixed = ensure_inputs(model, "m.keras", parse_input_specs(["frames:?,5,6"]))
    assert tuple(fixed.inputs[0].shape) == (None, 5, 6) and fixed.output_names == ["out"]
    for spec in ("frames:?,5,7", "frames:?,5,6:int32", "frames:?,?,6", "other:?,5,6", "frames:?,5"):
        with pytest.raises(InputError, match=r"the model defines its inputs \['frames'\]; an input spec is only "
                                             "for models that do not .*or to fix dimensions they leave open"):
            ensure_inputs(model, "m.keras", parse_input_specs([spec]))
    # one input of several (nc92: a recommender's history of any length beside two ids): the others keep their shapes
    ids, history = keras.Input((), dtype="int64", name="user"), keras.Input((None,), dtype="int64", name="history")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(9, 3)(history))
    two = keras.Model({"user": ids, "history": history},
                      keras.layers.Dense(1, name="score")(pooled + keras.layers.Embedding(9, 3)(ids)))
    fixed = ensure_inputs(two, "m.keras", parse_input_specs(["history:?,12:int64"]))
    assert {t.name: tuple(t.shape) for t in fixed.inputs} == {"user": (None,), "history": (None, 12)}
    got = fixed.predict({"user": np.array([1, 2]), "history": np.ones((2, 12), np.int64)}, verbose=0)
    np.testing.assert_allclose(got, two.predict({"user": np.array([1, 2]), "history": np.ones((2, 12), np.int64)},
                                                verbose=0), atol=1e-6)
    with pytest.raises(InputError, match=r"the model defines its inputs \[.*'history'.*\]; an input spec is only"):
        ensure_inputs(two, "m.keras", parse_input_specs(["user:?:int64"]))  # nothing open to fix there
    # beside the one that fixes a size, the others may be named as the model has them (nc180 gave all three)
    fixed = ensure_inputs(two, "m.keras", parse_input_specs(["history:?,12:int64", "user:?:int64"]))
    assert {t.name: tuple(t.shape) for t in fixed.inputs} == {"user": (None,), "history": (None, 12)}
    with pytest.raises(InputError, match=r"an input spec is only"):
        ensure_inputs(two, "m.keras", parse_input_specs(["history:?,12:int64", "user:?,3:int64"]))


def test_the_unrolled_routes_advice_names_only_the_inputs_it_fixes():
    """nc180 (a streaming LSTM taking its state as inputs): the advice named the state inputs too, which have no
    open size, and following it was refused ("an input spec is only for ...")."""
    from modelkit.converters.keras_tflite_unrolled import _dynamic
    from modelkit.spec import Signature, TensorSpec

    sig = Signature((TensorSpec("chunk", (None, None, 1)), TensorSpec("h", (None, 16)), TensorSpec("c", (None, 16))),
                    (TensorSpec("next", (None, None, 1)),))
    message = str(_dynamic(sig, "'lstm' (LSTM)", "its input has an open time axis"))
    assert "give the length with --input-spec chunk:?,<length>,1:float32 (<length>:" in message


# ------------------------------------------------------------------------------------------------
# The pieces, in this process (fast)

def test_routes_a_model_does_not_need_are_left_out_before_any_work(matrix):
    folder = Path(matrix[("gelu", "onnx")]["path"]).parent
    plain = check_keras_archive(folder / "discretize.keras")  # builtin layers only: no recurrent layer hides
    recurrent = check_keras_archive(folder / "masked_bilstm.keras")
    names = lambda specs: [e.route for e in specs[0]]  # noqa: E731
    assert names(hop_routes(Format.KERAS, Format.TFLITE, set(), {}, plain)) == ["converter"]
    assert names(hop_routes(Format.KERAS, Format.TFLITE, set(), {}, recurrent)) == ["converter", "unrolled", "loop"]
    assert names(hop_routes(Format.KERAS, Format.TORCH_EXPORT, set(), {}, plain)) == ["export"]
    assert names(hop_routes(Format.KERAS, Format.ONNX, set(), {"opset": 18}, plain)) == ["tf2onnx", "torch"]
    assert names(hop_routes(Format.KERAS, Format.ONNX, {"torch"}, {}, plain)) == ["torch"]
    custom = check_keras_archive(folder / "gelu.keras")  # a registered layer could hold an LSTM: every route
    assert names(hop_routes(Format.KERAS, Format.TFLITE, set(), {}, custom)) == ["converter", "unrolled", "loop"]


def test_combined_error_type_follows_what_the_routes_did():
    refused = {"route": "a", "type": "UnsupportedConversionError", "error": "no"}
    broke = {"route": "b", "type": "ConversionError", "error": "crashed"}
    drifted = {"route": "c", "type": "AccuracyError", "error": "drop", "report": {"ok": False}}
    assert type(combined_error("m.keras", "keras", "x", [refused, refused])) is UnsupportedConversionError
    assert type(combined_error("m.keras", "keras", "x", [refused, broke])) is ConversionError
    err = combined_error("m.keras", "keras", "x", [refused, drifted])
    assert isinstance(err, AccuracyError) and isinstance(err, ParityError) and err.report == {"ok": False}
    assert str(err) == ("m.keras: no route converts keras to x: route 'a' (UnsupportedConversionError): no; "
                        "route 'c' (AccuracyError): drop")


def test_routes_not_for_the_model_give_no_reason():
    """A custom layer might hold an LSTM, so the recurrent routes of keras -> tflite run; once loaded, they find the
    model has none (RouteNotApplicableError): the refusal is the route that was for it, unchanged, and the route
    line of an artifact names only real failures."""
    layer = {"route": "converter", "type": "UnsupportedConversionError", "error": "layer 'g' (G) cannot be converted"}
    not_for = {"route": "unrolled", "type": "RouteNotApplicableError", "error": "m.keras: the model has none"}
    drifted = {"route": "converter", "type": "AccuracyError", "error": "drop", "report": {"ok": False}}
    err = combined_error("m.keras", "keras", "tflite", [layer, not_for, {**not_for, "route": "loop"}])
    assert type(err) is UnsupportedConversionError and str(err) == "layer 'g' (G) cannot be converted"
    err = combined_error("m.keras", "keras", "tflite", [drifted, not_for])
    assert type(err) is AccuracyError and str(err) == "drop" and err.report == {"ok": False}
    assert type(combined_error("m.keras", "keras", "x", [not_for])) is RouteNotApplicableError
    assert describe({"taken": "torch", "tried": [not_for]}) is None
    assert describe({"taken": "torch", "tried": [not_for, layer]}) == (
        "route 'torch' (converter failed: layer 'g' (G) cannot be converted)")


def test_a_custom_layer_refused_by_tflite_is_refused_by_its_own_reason(matrix):
    message = matrix[("flags", "tflite")]["message"]
    assert re.match(r"layer 'flags' \(BitFlags\) cannot be converted to tflite", message), message
    assert "recurrent" not in message and "no route converts" not in message, message


def _mask_model(keras, layer, seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((7,), dtype="int32")
    return keras.Model(x, layer(keras.layers.Embedding(9, 3, mask_zero=True)(x)))


@pytest.mark.parametrize("make", [
    lambda L: L.Bidirectional(L.LSTM(4, return_sequences=True)),  # zeroed masked outputs, backward direction
    lambda L: L.GRU(4, go_backwards=True, return_sequences=True, reset_after=False),
    lambda L: L.SimpleRNN(4, return_sequences=True, return_state=True),
    lambda L: L.LSTM(4, return_state=True),
    lambda L: L.RNN([L.GRUCell(3), L.LSTMCell(4)], return_sequences=True),  # stacked cells: nested states
])
def test_unrolled_loop_matches_keras_loop_on_masks_directions_and_states(make):
    from modelkit._backend import import_keras
    from modelkit.converters._unroll import unrolled_rnn

    keras = import_keras("tensorflow")
    model = _mask_model(keras, make(keras.layers))
    x = np.random.default_rng(0).integers(0, 9, (5, 7)).astype(np.int32)
    x[:, 5:] = 0
    x[0] = 0
    x[1, 1:3] = 0
    want = [np.asarray(o) for o in keras.tree.flatten(model(x))]
    with unrolled_rnn(fused=False) as seen:
        got = [np.asarray(o) for o in keras.tree.flatten(model(x))]
    assert seen.steps and set(seen.steps) == {7} and seen.dynamic is None
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-6)


def test_keras_own_unroll_zeroes_the_wrong_steps_of_a_masked_backward_layer():
    """Why modelkit has its own loop: Keras' unroll=True applies the unreversed mask to the reversed outputs
    of a backward layer that zeroes masked outputs (a Bidirectional returning sequences)."""
    from modelkit._backend import import_keras

    keras = import_keras("tensorflow")
    L = keras.layers
    rolled = _mask_model(keras, L.Bidirectional(L.LSTM(4, return_sequences=True)), seed=3)
    unrolled = _mask_model(keras, L.Bidirectional(L.LSTM(4, return_sequences=True, unroll=True)), seed=3)
    unrolled.set_weights(rolled.get_weights())
    x = np.random.default_rng(1).integers(1, 9, (3, 7)).astype(np.int32)
    x[:, 4:] = 0
    assert np.max(np.abs(np.asarray(rolled(x)) - np.asarray(unrolled(x)))) > 1e-3


# ------------------------------------------------------------------------------------------------
# Saved under torch and JAX (slow: two more children each)

@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_masked_and_stacked_rnns_saved_under_torch_or_jax_convert_to_tflite_and_pt2(tmp_path, backend,
                                                                                     monkeypatch_module):
    kinds = ["masked_bilstm", "stacked"]
    saves = [{"kind": k, "path": str(tmp_path / f"{k}.keras"), "seed": 4} for k in kinds]
    _child.run(f"{MODULE}:save_all", {"saves": saves}, backend=backend, quiet=True)
    for kind in kinds:
        results = {r.format: r for r in modelkit.convert(tmp_path / f"{kind}.keras", "tflite,pt2", out_dir=tmp_path)}
        assert results["tflite"].route["taken"] == "unrolled"
        assert results["pt2"].route["taken"] == ("export" if kind == "masked_bilstm" else "unrolled")  # a scan
        assert all(r.parity["ok"] for r in results.values())
