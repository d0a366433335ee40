"""`modelkit inspect` of an ExecuTorch program says how far its batch goes: the signature shows '?', but the
program plans memory for batches 1..max_batch (`--max-batch`, recorded in the manifest's chain)."""
from __future__ import annotations

from click.testing import CliRunner

from modelkit import manifest
from modelkit.cli import main
from modelkit.spec import Signature, TensorSpec


def test_the_planned_batch_range_is_shown(tmp_path):
    pte = tmp_path / "m.pte"
    pte.write_bytes(b"\x00\x00\x00\x00ET12" + b"\x00" * 56)  # only the identifier is read: the manifest speaks
    sig = Signature((TensorSpec("pixels", (None, 16, 16, 3)),), (TensorSpec("digit", (None, 10)),))
    chain = [{"source": "keras", "target": "executorch", "converter": "modelkit.converters.keras_executorch:x",
              "versions": {}, "options": {"max_batch": 16, "quantize": "none"}, "seconds": 1.0}]
    manifest.write(pte, manifest.Manifest(format="executorch", signature=sig.to_dict(), chain=chain))
    r = CliRunner().invoke(main, ["inspect", str(pte)])
    assert r.exit_code == 0, r.output
    assert "batch: 1..16 planned in the program (--max-batch); a larger one runs in slices" in r.output.splitlines()
