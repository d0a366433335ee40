"""`modelkit verify` of a quantized artifact (its manifest says int8) that misses the parity tolerance: a note
says it is quantized and what its conversion judged it by, before the usual one-line error (exit 2)."""
from __future__ import annotations

from click.testing import CliRunner

from modelkit import manifest
from modelkit.cli import main
from modelkit.spec import Signature, TensorSpec
from tests.helpers import make_tiny_onnx

SIG = Signature((TensorSpec("x", (None, 4)),), (TensorSpec("probs", (None, 3)),))


def _pair(tmp_path, quantization: str):
    ref = make_tiny_onnx(tmp_path / "ref.onnx")
    cand = make_tiny_onnx(tmp_path / "cand.onnx", weight_scale=1.5)  # outputs that differ, as an int8 model's
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
    assert error.startswith(f"error: {cand} does not match") and "the outputs' float32 resolution" in error


def test_a_float_candidate_gets_no_note(tmp_path):
    ref, cand = _pair(tmp_path, "none")
    r = CliRunner().invoke(main, ["verify", str(ref), str(cand)])
    assert r.exit_code == 2 and "note:" not in r.stderr
