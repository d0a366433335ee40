"""Checks of one conversion cell (a run_hop summary, or the typed error it raised), shared by the matrices."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from modelkit.formats import manifest_path


def assert_refused(r: dict, cls: str, patterns: list[str]) -> None:
    """A typed refusal of class `cls` whose message matches every pattern, and nothing left behind."""
    dest = Path(r["path"])
    assert r.get("error") == cls, r
    for pattern in patterns:
        assert re.search(pattern, r["message"]), (pattern, r["message"])
    assert not dest.exists() and not manifest_path(dest).exists()
    assert not [p for p in dest.parent.iterdir() if p.name.endswith(".partial")]


def assert_parity(r: dict, atol: float) -> dict:
    """A conversion verified within `atol` on inputs that make the reference vary; returns its parity report."""
    assert "error" not in r and "failed" not in r, r
    parity = r["parity"]
    assert parity["ok"] and all(o["max_abs"] <= atol for o in parity["outputs"]), parity["outputs"]
    assert all(o["spread"] > 1e-4 for o in parity["outputs"])  # the reference varies: not vacuous
    return parity


def assert_artifacts_agree(results: list, source: Any, output: str, shapes: list[tuple[int, ...]],
                           rtol: float = 0.0, atol: float = 1e-5, seed: int = 0) -> None:
    """Each converted artifact (ConversionResult) gives `source`'s `output` on normal samples of every shape in
    `shapes` (batches and lengths no check used)."""
    import numpy as np

    import modelkit

    rng = np.random.default_rng(seed)
    for r in results:
        artifact = modelkit.load(r.path)
        for shape in shapes:
            x = rng.normal(size=shape).astype(np.float32)
            np.testing.assert_allclose(artifact.predict(x)[output], source.predict(x)[output], rtol=rtol, atol=atol,
                                       err_msg=f"{r.format} {shape}")
