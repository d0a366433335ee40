"""Target registry: names, TVM target dicts, host CPU detection, JSON targets, errors, `modelkit targets`."""
import json

import pytest
from click.testing import CliRunner

from modelkit.cli import main
from modelkit.errors import ConversionError, UnsupportedConversionError
from modelkit.targets import registry
from modelkit.targets.tvm.tuning import parse_budget

NAMES = ["server-cpu", "server-gpu", "mobile-arm64", "edge-arm64", "edge-armv7"]


def test_named_targets_and_what_fits_them():
    all_targets = registry.targets()
    assert list(all_targets) == NAMES
    for t in all_targets.values():
        assert t.description and t.formats and t.engines and "tvm" in t.formats
        assert t.tvm["kind"] in ("llvm", "cuda")
    assert all_targets["server-gpu"].tvm["arch"] == "sm_90" and all_targets["server-gpu"].device == "cuda"
    assert all_targets["mobile-arm64"].tvm["mcpu"] == "cortex-a76"
    assert all_targets["edge-arm64"].tvm["mcpu"] == "cortex-a72"
    assert all_targets["edge-arm64"].tvm["mtriple"] == "aarch64-linux-gnu"
    v7 = all_targets["edge-armv7"]
    assert v7.tvm["mtriple"] == "armv7a-linux-gnueabihf" and "+neon" in v7.tvm["mattr"] and v7.arch == "armv7"
    assert v7.cross_compiler == "arm-linux-gnueabihf-g++" and v7.cross
    assert not all_targets["server-cpu"].cross


def test_tvm_accepts_every_target_dict():
    tvm = pytest.importorskip("tvm")
    for t in registry.targets().values():
        parsed = tvm.target.Target(t.tvm)
        assert parsed.kind.name == t.tvm["kind"]


@pytest.mark.parametrize("flags, mcpu", [
    ("fpu sse4_2 avx avx2 fma bmi2 avx512f avx512dq avx512bw avx512vl avx512_vnni amx_tile avx512_fp16 avx512_bf16",
     "sapphirerapids"),
    ("sse4_2 avx avx2 fma bmi2 avx512f avx512dq avx512bw avx512vl avx512_vnni", "cascadelake"),
    ("sse4_2 avx avx2 fma bmi2 avx512f avx512dq avx512bw avx512vl", "skylake-avx512"),
    ("sse4_2 avx avx2 fma bmi2", "haswell"),
    ("sse4_2", "x86-64"),
])
def test_host_cpu_detection_from_cpuinfo(tmp_path, flags, mcpu):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    got = registry.detect_host_cpu(info)
    assert got["mcpu"] == mcpu and got["model"] == "Test CPU"
    assert set(got["flags"]) <= set(flags.split())


def test_missing_cpuinfo_falls_back_to_generic(tmp_path):
    got = registry.detect_host_cpu(tmp_path / "nope")
    assert got["mcpu"] == "x86-64" and "unreadable" in got["source"]


def test_unknown_target_lists_valid_ones():
    with pytest.raises(UnsupportedConversionError) as exc:
        registry.get("raspberry-pi-9")
    for name in NAMES:
        assert name in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_raw_tvm_target_dict_as_json():
    t = registry.get('{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "neoverse-n1"}')
    assert t.name == "custom" and t.arch == "aarch64" and t.cross_compiler == "aarch64-linux-gnu-g++"
    assert t.tvm["mcpu"] == "neoverse-n1"
    host = registry.get({"kind": "llvm", "mcpu": "znver4"})
    assert host.arch == registry.host_arch() and host.cross_compiler is None
    with pytest.raises(UnsupportedConversionError, match="not valid JSON"):
        registry.get('{"kind": llvm}')
    with pytest.raises(UnsupportedConversionError, match="needs a 'kind'"):
        registry.get('{"mcpu": "x"}')
    with pytest.raises(UnsupportedConversionError, match="not supported"):
        registry.get('{"kind": "vulkan"}')


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("1h30m", 5400), ("45", 45), (2.5, 2.5)])
def test_budget_parsing(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("bad", ["10x", "m", "-5", "0"])
def test_bad_budget(bad):
    with pytest.raises(ConversionError):
        parse_budget(bad)


def test_targets_cli_json_and_table():
    runner = CliRunner()
    res = runner.invoke(main, ["targets", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert [t["name"] for t in data] == NAMES
    cpu = data[0]
    assert cpu["detected"]["mcpu"] == cpu["tvm_target"]["mcpu"] and cpu["detected"]["cores"] >= 1
    res = runner.invoke(main, ["targets"])
    assert res.exit_code == 0 and "server-cpu detected from" in res.output and "edge-armv7" in res.output


def test_compile_cli_unknown_target_exits_2(tiny_onnx):
    res = CliRunner().invoke(main, ["compile", str(tiny_onnx), "--target", "nope"])
    assert res.exit_code == 2
    assert "unknown target 'nope'" in res.output and "edge-arm64" in res.output
