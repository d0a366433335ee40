"""`modelkit run` without --output prints each output's dtype and shape, the argmax of class rows and the
values, shortened for many rows: the argmax line as the values are (60 rows print whole, more do not)."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from modelkit.cli import main
from tests.helpers import make_tiny_onnx


@pytest.mark.parametrize("rows", [3, 60, 360])
def test_the_argmax_line_is_shortened_like_the_values(tmp_path, rows):
    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx")
    x = np.random.default_rng(0).standard_normal((rows, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = CliRunner().invoke(main, ["run", str(onnx_path), "--input", str(tmp_path / "x.npy")])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if ln.startswith("  argmax: "))
    labels = line.removeprefix("  argmax: ")
    if rows <= 60:
        assert labels.count(",") == rows - 1 and "..." not in labels
    else:
        assert labels.count(",") == 20 and "..." in labels and len(line) < 120
