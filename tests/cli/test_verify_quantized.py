"""`modelkit verify` of a quantized artifact (its manifest says int8): judged by the loose bounds its conversion
checked under the accuracy gate (int8: atol 1.0, cosine 0.98), not the float edge's (cosine 0.9999, which no
--atol could get past); one that misses even those gets a note saying it is quantized and what its conversion
judged it by, before the usual one-line error (exit 2)."""
from __future__ import annotations

from click.testing import CliRunner

from modelkit import manifest
from modelkit.cli import main
from modelkit.spec import Signature, TensorSpec
from tests.helpers import make_tiny_onnx

SIG = Signature((TensorSpec("x", (None, 4)),), (TensorSpec("probs", (None, 3)),))


def _pair(tmp_path, quantization: str, weight_scale: float = -3.0):
    ref = make_tiny_onnx(tmp_path / "ref.onnx")
    cand = make_tiny_onnx(tmp_path / "cand.onnx", weight_scale=weight_scale)  # outputs that differ
    accuracy = {"ok": True, "source_accuracy": 0.97, "artifact_accuracy": 0.96, "drop": 0.01, "data": "test.npz"}
    manifest.write(cand, manifest.Manifest(format="onnx", signature=SIG.to_dict(), quantization=quantization,
                                           extra={"accuracy": accuracy}))
    return ref, cand


def test_a_quantized_candidate_gets_a_note_then_the_error(tmp_path):
    ref, cand = _pair(tmp_path, "int8")
    r = CliRunner().invoke(main, ["verify", str(ref), str(cand)])
    assert r.exit_code == 2
    note, error = r.stderr.strip().splitlines()[-2:]
    assert note.startswith(f"note: {cand} is quantized (int8): its outputs are not expected to match")
    assert "judged it by accuracy: 0.9700 -> 0.9600 (drop +0.0100) on test.npz" in note
    assert error.startswith(f"error: {cand} does not match") and "< 0.98" in error  # int8's bound, not 0.9999


def test_a_float_candidate_gets_no_note(tmp_path):
    ref, cand = _pair(tmp_path, "none")
    r = CliRunner().invoke(main, ["verify", str(ref), str(cand)])
    assert r.exit_code == 2 and "note:" not in r.stderr


def test_a_quantized_candidate_within_its_loose_bounds_passes_where_a_float_one_fails(tmp_path):
    ref, cand = _pair(tmp_path, "int8", weight_scale=1.05)  # off by ~1e-2, as an int8 model's outputs are
    r = CliRunner().invoke(main, ["verify", str(ref), str(cand)])
    assert r.exit_code == 0, r.output
    (tmp_path / "float").mkdir()
    ref, cand = _pair(tmp_path / "float", "none", weight_scale=1.05)
    r = CliRunner().invoke(main, ["verify", str(ref), str(cand)])
    assert r.exit_code == 2 and "does not match" in r.stderr
