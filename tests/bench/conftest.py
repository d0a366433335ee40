"""One real benchmark run shared by the tests of its outputs (children are the slow part)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner


@pytest.fixture(scope="session")
def cnn_onnx(cnn_tf, tmp_path_factory) -> Path:
    """The session's TF-trained CNN converted to ONNX only (verified on the way)."""
    import modelkit

    out = tmp_path_factory.mktemp("bench_conv")
    (res,) = modelkit.convert(cnn_tf, "onnx", out_dir=out, force=True)
    return Path(res.path)


@pytest.fixture(scope="session")
def cli_run(cnn_tf, cnn_onnx, tmp_path_factory) -> dict:
    """`modelkit bench cnn.onnx cnn.keras --batch 1,2 --iterations 5 --json --csv --report`."""
    from modelkit.cli import main

    out = tmp_path_factory.mktemp("bench_out")
    csv_path, html_path = out / "b.csv", out / "b.html"
    result = CliRunner().invoke(main, ["bench", str(cnn_onnx), str(cnn_tf), "--batch", "1,2", "--iterations", "5",
                                       "--warmup", "1", "--json", "--csv", str(csv_path), "--report", str(html_path)])
    assert result.exit_code == 0, result.output
    return {"json": json.loads(result.stdout), "stderr": result.stderr, "csv": csv_path, "html": html_path}
