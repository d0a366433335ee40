"""keras -> pt2 (torch.export, dynamic batch): parity of the trained digits CNN from two backends,
the JAX-trained two-input model with names kept, and the dynamic batch range recorded in the program."""
import json
from pathlib import Path

import pytest

import modelkit
from modelkit.converters.keras_pt2 import TOLERANCE
from modelkit.formats import Format, manifest_path
from tests.helpers import converted_to_torch  # one torch child per source model

ATOL = 1e-5  # the edge's tolerance: the exported graph runs the same aten kernels as eager Keras


@pytest.fixture(scope="module")
def pt2_cnn(cnn_tf, cnn_torch, tmp_path_factory) -> dict[str, Path]:
    return {backend: Path(converted_to_torch(src, tmp_path_factory)["pt2"].path)
            for backend, src in (("tensorflow", cnn_tf), ("torch", cnn_torch))}


def test_tolerance_is_the_stated_one():
    assert TOLERANCE.atol == ATOL and TOLERANCE.min_cosine == 0.99999


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_parity_of_trained_cnn_from_each_backend(pt2_cnn, backend):
    path = pt2_cnn[backend]
    assert path.suffix == ".pt2" and modelkit.formats.detect(path) == Format.TORCH_EXPORT
    m = json.loads(manifest_path(path).read_text())
    parity = m["parity"]
    assert parity["ok"] and parity["inputs"] == "digits test split (real samples)"
    assert [c["batch"] for c in parity["cases"]] == [1, 7]
    assert parity["tolerance"]["atol"] == ATOL
    (probs,) = parity["outputs"]
    assert probs["name"] == "probs" and probs["max_abs"] <= ATOL and probs["argmax_agreement"] == 1.0
    assert probs["cosine"] >= 0.99999 and probs["spread"] > 0.01
    assert m["training"]["backend"] == backend and m["format"] == "pt2"
    edge = m["chain"][-1]
    assert edge["converter"] == "modelkit.converters.keras_pt2:keras_to_pt2"
    assert edge["versions"]["torch"].startswith("2.13")


def test_batch_dimension_is_dynamic_in_the_exported_program(pt2_cnn):
    import torch

    program = torch.export.load(str(pt2_cnn["torch"]))
    (placeholder,) = [s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    shape = next(n for n in program.graph.nodes if n.name == placeholder.arg.name).meta["val"].shape
    assert isinstance(shape[0], torch.SymInt) and tuple(shape[1:]) == (8, 8, 1)
    (constraint,) = program.range_constraints.values()
    assert constraint.lower == 1 and constraint.upper > 10**6


@pytest.mark.slow
def test_two_inputs_two_outputs_trained_under_jax_keep_names(multi_io_jax, tmp_path_factory):
    r = converted_to_torch(multi_io_jax, tmp_path_factory)["pt2"]
    assert r.parity["ok"] and [c["batch"] for c in r.parity["cases"]] == [1, 7]
    outs = {o["name"]: o for o in r.parity["outputs"]}
    assert set(outs) == {"probs", "intensity"} and all(o["max_abs"] <= ATOL for o in outs.values())
    m = modelkit.load(r.path)
    assert m.signature.input_names == ["image", "features"]
    assert m.signature.output_names == ["probs", "intensity"]
