"""Usage errors exit 2 on every command: an unknown flag, a missing argument, a bad value for an option of
each type (click prints `Usage: / Try / Error:`), and values click accepts but the command refuses."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from modelkit.cli import COMMANDS, main


def _command(name: str) -> click.Command:
    return main.get_command(click.Context(main), name)


def _usage_error(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, f"{args}: exit {result.exit_code}\n{result.output[-2000:]}"
    return result.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_an_unknown_flag_exits_2(name: str) -> None:
    assert "No such option '--no-such-flag'" in _usage_error([name, "--no-such-flag"])


def test_the_group_itself_exits_2() -> None:
    assert "No such option '--no-such-flag'" in _usage_error(["--no-such-flag"])
    assert "No such command 'no-such-command'" in _usage_error(["no-such-command"])


REQUIRED = {name for name in COMMANDS if any(p.required for p in _command(name).params)}


def test_the_commands_with_required_parameters_are_the_expected_ones() -> None:
    assert REQUIRED == {"bench", "compile", "convert", "verify", "run", "inspect", "serve", "package", "serve-static",
                        "optimize"}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_missing_arguments_exit_2(name: str) -> None:
    output = _usage_error([name])
    assert "Missing argument" in output or "Missing option" in output


def _bad_value(param: click.Option, tmp: Path) -> str | None:
    """A value click must refuse for this option's type, or None for types that take any string."""
    t = param.type
    if isinstance(t, click.Choice):
        return "no-such-choice"
    if isinstance(t, (click.types.IntParamType, click.types.FloatParamType)):  # IntRange / FloatRange too
        return "not-a-number"
    if isinstance(t, click.Path):
        if t.exists:
            return str(tmp / "no-such-path")
        if not t.file_okay:
            return str(tmp / "a-file")
        if not t.dir_okay:
            return str(tmp)
    return None


def _typed_options() -> list[tuple[str, str]]:
    out = []
    for name in sorted(COMMANDS):
        for p in _command(name).params:
            if isinstance(p, click.Option) and not p.is_flag and _bad_value(p, Path("/")) is not None:
                out.append((name, p.opts[0]))
    return out


TYPED = _typed_options()


def test_every_kind_of_typed_option_is_covered() -> None:
    kinds = {type(o.type).__name__ for n in COMMANDS for o in _command(n).params
             if isinstance(o, click.Option) and (n, o.opts[0]) in TYPED}
    assert {"Choice", "IntRange", "FloatRange", "Path", "IntParamType"} <= kinds, kinds


@pytest.mark.parametrize("name,opt", TYPED, ids=[f"{n}{o}" for n, o in TYPED])
def test_a_bad_value_for_a_typed_option_exits_2(tmp_path: Path, name: str, opt: str) -> None:
    (tmp_path / "a-file").write_text("x")
    param = next(p for p in _command(name).params if isinstance(p, click.Option) and p.opts[0] == opt)
    output = _usage_error([name, opt, _bad_value(param, tmp_path)])  # given first: checked first
    assert f"Invalid value for '{opt}'" in output or f"Invalid value for {opt}" in output, output


@pytest.fixture
def files(tiny_onnx: Path, tmp_path: Path) -> dict[str, str]:
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    (tmp_path / "web").mkdir()
    return {"onnx": str(tiny_onnx), "x": str(tmp_path / "x.npy"), "web": str(tmp_path / "web"),
            "out": str(tmp_path / "out")}


# values of the right click type that the command must still refuse, with exit code 2
REFUSED = [
    (["run", "{onnx}", "--input", "{x}", "--threads", "0"], "Invalid value for '--threads'"),
    (["run", "{onnx}", "--input", "{x}", "--device", "tpu"], "error: unknown device 'tpu'"),
    (["convert", "{onnx}", "--to", "tvm", "--atol", "-1"], "Invalid value for '--atol'"),
    (["convert", "{onnx}", "--to", "tvm", "--opset", "0"], "Invalid value for '--opset'"),
    (["convert", "{onnx}", "--to", "tvm", "--max-accuracy-drop", "2"], "Invalid value for '--max-accuracy-drop'"),
    (["convert", "{onnx}", "--to", "caffe"], "error: unknown format 'caffe'; valid formats: keras, onnx,"),
    (["convert", "{onnx}", "--to", "onxx"], "error: unknown format 'onxx' (did you mean 'onnx'?); valid formats:"),
    (["convert", "{onnx}", "--to", "tflight"], "error: unknown format 'tflight' (did you mean 'tflite'?)"),
    (["inspect", "{onnx}", "--import", "{out}/none.py"], "none.py: no such Python file"),
    (["verify", "{onnx}", "{onnx}", "--atol", "-1"], "Invalid value for '--atol'"),
    (["verify", "{onnx}", "{onnx}", "--batch", "x"], "Invalid value for '--batch'"),
    (["verify", "{onnx}", "{onnx}", "--data", "{out}/none.npz"], "Invalid value for '--data'"),
    (["bench", "{onnx}", "--batch", "0"], "Invalid value for '--batch'"),
    (["bench", "{onnx}", "--duration", "soon", "--no-baseline"], "error: bad duration 'soon'"),
    (["bench", "{onnx}", "--duration", "1s", "--iterations", "2"], "give --duration or --iterations, not both"),
    (["compile", "{onnx}", "--target", "no-such-target"], "error: unknown target 'no-such-target'"),
    (["compile", "{onnx}", "--budget", "soon"], "error: bad budget 'soon'"),
    (["train", "--model", "nope"], "error: unknown model 'nope'"),
    (["train", "--model", "mlp", "--data", "nope.csv"], "error: data file not found: nope.csv"),
    (["train", "--config", "nope.toml"], "error: config file not found: nope.toml"),
    (["package", "{onnx}", "--for", "triton", "--out", "{out}", "--quantize", "int8"], "apply to --for browser only"),
    (["serve-static", "{web}", "--host", "0.0.0.0"], "pass --allow-remote"),
]


@pytest.mark.parametrize("args,expected", REFUSED, ids=[" ".join(a[:1] + a[-2:]) for a, _ in REFUSED])
def test_values_the_command_refuses_exit_2(files: dict[str, str], args: list[str], expected: str) -> None:
    output = _usage_error([a.format(**files) for a in args])
    assert expected in output, output
    assert "Traceback" not in output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_out_option_has_the_short_o(name: str) -> None:
    """`-o` is what a newcomer types first (`modelkit compile m.onnx -o m.tvm.so` answered "No such option");
    where a command writes to --out (run: --output), -o says the same, and no command uses -o for anything else."""
    for param in _command(name).params:
        if "--out" in getattr(param, "opts", []) or (name == "run" and "--output" in getattr(param, "opts", [])):
            assert "-o" in param.opts, f"{name} --out has no -o"
        else:
            assert "-o" not in getattr(param, "opts", []) + getattr(param, "secondary_opts", []), name


def test_package_takes_the_servers_name_with_an_underscore_too(tmp_path: Path) -> None:
    """`--for tf_serving` (the Python spelling) was a usage error listing 'tf-serving'; it reaches the command."""
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"not a model")
    result = CliRunner().invoke(main, ["package", str(bad), "--for", "tf_serving", "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "not a model file" in result.output
    assert "Invalid value" not in result.output and not (tmp_path / "p").exists()
