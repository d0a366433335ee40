"""`modelkit convert --to executorch --max-batch N`: the batch the program plans memory for, given on the command
line, reaches the edge (the program, the engine and the manifest say N); bad values are one typed line, exit 2,
before any conversion starts."""
import importlib.util
import json

import numpy as np
import pytest
from click.testing import CliRunner

import modelkit
from modelkit.cli import main
from modelkit.converters.keras_executorch import MAX_MAX_BATCH, check_max_batch
from modelkit.errors import UnsupportedConversionError
from modelkit.formats import manifest_path


@pytest.mark.parametrize("value", ["3", "0", "-5", "abc", "16.5", str(MAX_MAX_BATCH + 1), ""])
def test_bad_max_batch_is_one_line_exit_2_before_any_work(cnn_tf, tmp_path, value):
    r = CliRunner().invoke(main, ["convert", str(cnn_tf), "--to", "executorch", "--max-batch", value,
                                  "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: max_batch=") and "from 7 " in r.stderr and f"to {MAX_MAX_BATCH}" in r.stderr
    assert "converting" not in r.output and not (tmp_path / "out").exists()


def test_max_batch_applies_to_executorch_only(cnn_tf, tmp_path):
    r = CliRunner().invoke(main, ["convert", str(cnn_tf), "--to", "onnx,tflite", "--max-batch", "16",
                                  "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and r.stderr.strip() == "error: --max-batch applies to --to executorch only " \
                                                     "(asked: onnx,tflite)"
    for value, expected in ((7, 7), ("4096", 4096), (" 32 ", 32)):
        assert check_max_batch(value) == expected
    for value in (True, 8.0, None, "1e3"):
        with pytest.raises(UnsupportedConversionError, match="max_batch="):
            check_max_batch(value)
    with pytest.raises(UnsupportedConversionError, match=r"max_batch=5: .* from 7"):  # Python: before any child
        modelkit.convert(cnn_tf, "executorch", out_dir=tmp_path / "py", max_batch=5)
    assert not (tmp_path / "py").exists()


@pytest.mark.slow  # a torch child and an XNNPACK lowering: 19 to 43 s measured on the shared 2-core machine
@pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                    reason="executorch is not installed (pip install 'modelkit[executorch]')")
def test_max_batch_reaches_the_program_the_engine_and_the_manifest(cnn_tf, tmp_path):
    r = CliRunner().invoke(main, ["convert", str(cnn_tf), "--to", "executorch", "--max-batch", "12",
                                  "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    (pte,) = tmp_path.glob("*.pte")
    m = json.loads(manifest_path(pte).read_text())
    assert m["parity"]["ok"] and m["extra"]["dynamic_dims"]["image"]["0"]["accepts"] == [1, 12]
    model = modelkit.load(pte)
    assert model.max_batch == 12  # read back from inside the program, not the manifest
    keras_model = modelkit.load(cnn_tf)
    x = np.random.default_rng(5).random((12 * 2 + 3, 8, 8, 1), dtype=np.float32)  # past the plan: in slices
    assert np.abs(model.predict(x)["probs"] - keras_model.predict(x)["probs"]).max() <= 1e-4
