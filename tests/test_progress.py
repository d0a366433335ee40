"""modelkit._progress: a bar with M/N and an ETA on a terminal, the plain progress lines elsewhere, nothing when
quiet; lines printed while a bar is live (this process's and its children's) go above the bar; `verbose=False`
in the API silences a call."""
from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from rich.progress import TimeRemainingColumn

from modelkit import _child, _progress
from modelkit._progress import eta, steps, verbosity
from modelkit._text import QUIET_ENV, progress
from tests.helpers import make_tiny_keras

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(autouse=True)
def loud(monkeypatch):
    monkeypatch.delenv(QUIET_ENV, raising=False)
    monkeypatch.delenv("TERM", raising=False)


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, color_system=None, width=120), out


def test_a_terminal_gets_a_bar_with_m_of_n_and_an_eta_and_every_message(capsys) -> None:
    console, out = terminal()
    with steps(3, "convert", console=console) as bar:
        assert bar.mode == "bar" and _progress.live()
        assert any(isinstance(c, TimeRemainingColumn) for c in bar.progress.columns)
        bar.advance("[1/3] keras -> onnx: wrote cnn.onnx")
        progress("[bench] a line from elsewhere in this process")  # through the bar, markup-like text kept
        bar.note("a line without a step")
        bar.advance("[2/3] keras -> tflite: wrote cnn.tflite")
        bar.advance()
    assert not _progress.live()
    text = ANSI.sub("", out.getvalue())
    for line in ("[1/3] keras -> onnx: wrote cnn.onnx", "[bench] a line from elsewhere in this process",
                 "a line without a step", "[2/3] keras -> tflite: wrote cnn.tflite"):
        assert line in text
    assert re.search(r"convert .*3/3 +\d+:\d\d:\d\d +\d+:\d\d:\d\d", text), text  # M/N, elapsed, ETA
    assert capsys.readouterr().err == ""  # all of it went to the bar's console


def test_the_eta_is_the_runs_average_pace() -> None:
    task = SimpleNamespace(finished=False, total=10, completed=4, elapsed=30.0, fields={"first": 1})
    assert eta(task) == pytest.approx(30.0 / 3 * 6)  # 3 steps done this run (a resumed run started at 1)
    assert eta(SimpleNamespace(finished=False, total=10, completed=1, elapsed=5.0, fields={"first": 1})) is None
    assert eta(SimpleNamespace(finished=False, total=None, completed=4, elapsed=5.0, fields={})) is None
    assert eta(SimpleNamespace(finished=True, total=3, completed=3, elapsed=5.0, fields={})) == 0.0


def test_stderr_that_is_a_terminal_gets_the_bar(monkeypatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    with steps(2, "bench") as bar:
        assert bar.mode == "bar"
    monkeypatch.setenv("TERM", "dumb")
    with steps(2, "bench") as bar:
        assert bar.mode == "lines"


def test_not_a_terminal_gives_exactly_the_plain_lines(capsys) -> None:
    with steps(3, "convert") as bar:
        assert bar.mode == "lines" and not _progress.live()
        bar.note("trial 1/3 ...")
        bar.advance("[1/3] keras -> onnx: wrote cnn.onnx")
        bar.advance()
        progress("[tune] 12 s  trials 4")
    assert capsys.readouterr().err == "trial 1/3 ...\n[1/3] keras -> onnx: wrote cnn.onnx\n[tune] 12 s  trials 4\n"


def test_no_bar_where_the_caller_asks_for_lines_or_one_is_live_already() -> None:
    console, out = terminal()
    with steps(1, "convert", bar=False, console=console) as bar:
        assert bar.mode == "lines"
    with steps(2, "bench", console=console) as outer:
        with steps(5, "training", console=console) as inner:
            assert outer.mode == "bar" and inner.mode == "lines"
            inner.advance("epoch 1/5")
    assert "epoch 1/5" in ANSI.sub("", out.getvalue())


def test_without_rich_a_terminal_gets_the_plain_lines(monkeypatch, capsys) -> None:
    """rich comes with the extras that do long work, not with the runtime-only ones: no bar, the same lines."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rich" else real(name, *a))
    console, _out = terminal()
    with steps(2, "convert", console=console) as bar:
        assert bar.mode == "lines"
        bar.advance("[1/2] keras -> onnx: wrote cnn.onnx")
    assert capsys.readouterr().err == "[1/2] keras -> onnx: wrote cnn.onnx\n"


def test_quiet_gives_nothing(monkeypatch, capsys) -> None:
    console, out = terminal()
    monkeypatch.setenv(QUIET_ENV, "1")
    for kwargs in ({}, {"console": console}):
        with steps(3, "convert", **kwargs) as bar:
            assert bar.mode == "off"
            bar.note("trial 1/3 ...")
            bar.advance("[1/3] keras -> onnx: wrote cnn.onnx")
            progress("[tune] 12 s")
    monkeypatch.delenv(QUIET_ENV)
    with steps(3, "training", show=False, console=console) as bar:  # the caller's own verbose=False
        bar.advance("epoch 1/3")
    assert capsys.readouterr().err == "" and out.getvalue() == ""


def test_a_childs_lines_go_through_the_live_bar() -> None:
    console, out = terminal()
    with steps(2, "bench", console=console) as bar:
        _child.run("tests.test_child:echo", {"value": "under a bar"})
        bar.advance()
    assert "progress: working on under a bar" in ANSI.sub("", out.getvalue())


def test_verbosity_sets_quiet_for_the_block_and_restores_it(monkeypatch) -> None:
    import os

    with verbosity(False):
        assert os.environ[QUIET_ENV] == "1"
    assert QUIET_ENV not in os.environ
    monkeypatch.setenv(QUIET_ENV, "0")
    with pytest.raises(RuntimeError), verbosity(False):
        raise RuntimeError
    assert os.environ[QUIET_ENV] == "0"
    with verbosity(True):
        assert os.environ[QUIET_ENV] == "0"


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory) -> Path:
    return make_tiny_keras(tmp_path_factory.mktemp("keras") / "tiny.keras")


@pytest.mark.slow
def test_convert_verbose_false_prints_no_progress(tiny_keras: Path, tmp_path: Path, capfd) -> None:
    import modelkit

    (quiet,) = modelkit.convert(tiny_keras, "onnx", out_dir=tmp_path / "q", verbose=False)
    err = capfd.readouterr().err
    assert quiet.parity["ok"] and "keras -> onnx" not in err and "converting" not in err, err
    (loud,) = modelkit.convert(tiny_keras, "onnx", out_dir=tmp_path / "v")
    err = capfd.readouterr().err
    assert loud.parity["ok"] and "[1/1] keras -> onnx: converting tiny.keras" in err, err
