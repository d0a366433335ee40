"""Every path the README, docs, code and scripts name (docs/x.md, benchmarks/x.py, tests/..., scripts/...,
modelkit/...) exists: a reader sent to a file that was renamed or never written finds nothing."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATH = re.compile(r"\b(?:docs|benchmarks|tests|scripts|modelkit)/[A-Za-z0-9_/.-]+\.(?:md|py|sh)\b")


def _texts() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for folder, pattern in (("docs", "*.md"), ("modelkit", "*.py"), ("benchmarks", "*.py"), ("tests", "*.py"),
                            ("scripts", "*")):
        files += [p for p in (ROOT / folder).rglob(pattern) if p.is_file()]
    return [f for f in files if f != Path(__file__).resolve()]  # not this file's own examples


def test_every_named_path_exists():
    missing = sorted({f"{p.relative_to(ROOT)}: {m}" for p in _texts()
                      for m in PATH.findall(p.read_text(errors="replace")) if not (ROOT / m).exists()})
    assert not missing, "\n".join(missing)


def test_the_check_finds_a_missing_path(tmp_path):
    assert PATH.findall("see docs/quantization.md, and benchmarks/peers.py.") == ["docs/quantization.md",
                                                                                 "benchmarks/peers.py"]
