"""A small real run of `modelkit bench` on the session's CNN (.keras + ONNX): rows, ratios, report files."""
from __future__ import annotations

import base64
import csv
import json

import pytest

from modelkit.bench import SCHEMA_PATH


def _check(value, schema, where="$"):
    """A small JSON-Schema subset checker (type, enum, minimum, required, properties, items)."""
    types = schema.get("type")
    if types:
        kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
                 "integer": int, "number": (int, float)}
        allowed = [types] if isinstance(types, str) else types
        ok = any(isinstance(value, kinds[t]) and not (t in ("integer", "number") and isinstance(value, bool))
                 for t in allowed)
        assert ok, f"{where}: {value!r} is not {allowed}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "minimum" in schema and isinstance(value, (int, float)) and not isinstance(value, bool):
        assert value >= schema["minimum"], f"{where}: {value} < {schema['minimum']}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing '{key}'"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{where}[{i}]")


def validate(doc: dict) -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    try:
        import jsonschema
    except ImportError:
        _check(doc, schema)
    else:
        jsonschema.validate(doc, schema)


@pytest.mark.slow
def test_rows_have_stats_and_ratios_to_both_baselines(cli_run, cnn_tf, cnn_onnx) -> None:
    doc = cli_run["json"]
    rows = doc["rows"]
    # the predict baseline first, then the artifacts as given (the .keras given is the direct baseline too)
    assert [(r["mode"], r["format"], r["batch"]) for r in rows] == [
        ("keras.predict", "keras", 1), ("keras.predict", "keras", 2), ("run", "onnx", 1), ("run", "onnx", 2),
        ("run", "keras", 1), ("run", "keras", 2)]
    by = {(r["mode"], r["format"], r["batch"]): r for r in rows}
    for b in (1, 2):
        pred, direct, onnx = by["keras.predict", "keras", b], by["run", "keras", b], by["run", "onnx", b]
        assert onnx["speedup_vs_predict"] == pytest.approx(pred["latency_ms"]["p50"] / onnx["latency_ms"]["p50"])
        assert onnx["speedup_vs_direct"] == pytest.approx(direct["latency_ms"]["p50"] / onnx["latency_ms"]["p50"])
        assert pred["speedup_vs_predict"] == 1.0 and direct["speedup_vs_direct"] == 1.0
        assert onnx["source"] == str(cnn_tf.resolve()) and onnx["engine"] == "onnxruntime"
        assert pred["engine"] == "keras.predict/tensorflow" and pred["kind"] == "baseline"
    for r in rows:
        lat = r["latency_ms"]
        assert r["iterations"] == 5 and r["error"] is None
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["throughput_sps"] == pytest.approx(r["batch"] * 5 / (lat["mean"] * 5 / 1e3))
        assert r["load_s"] > 0 and r["first_call_s"] > 0 and r["peak_rss_bytes"] > 10 * 2**20
        assert r["inputs"] == "digits test split (real samples)"  # the manifest names the data set
        assert r["flops"] == by["run", "onnx", r["batch"]]["flops"] > 0 and r["flops_from"] == str(cnn_onnx)
        assert r["gflops_per_s"] == pytest.approx(r["flops"] / (lat["p50"] / 1e3) / 1e9)
        assert r["fraction_of_peak"] == pytest.approx(r["gflops_per_s"] / doc["machine"]["peak_gflops"])
    assert by["run", "onnx", 2]["flops"] == 2 * by["run", "onnx", 1]["flops"]
    assert by["run", "onnx", 1]["size_bytes"] == cnn_onnx.stat().st_size
    # progress: one line per artifact x batch on stderr
    assert "[4/6] cnn_tf.onnx b=2 ... p50" in cli_run["stderr"]
    assert "[1/6] cnn_tf.keras (keras.predict) b=1" in cli_run["stderr"]


def test_each_engine_ran_in_its_own_process(cli_run) -> None:
    rows = cli_run["json"]["rows"]
    onnx = [r for r in rows if r["format"] == "onnx"]
    keras = [r for r in rows if r["format"] == "keras"]
    assert all(r["frameworks"] == ["onnxruntime"] for r in onnx)  # TF imported by the Keras children did not leak
    assert all("tensorflow" in r["frameworks"] and "keras" in r["frameworks"] for r in keras)
    assert max(r["peak_rss_bytes"] for r in onnx) < min(r["peak_rss_bytes"] for r in keras)


def test_json_validates_against_the_schema(cli_run) -> None:
    validate(cli_run["json"])
    bad = json.loads(json.dumps(cli_run["json"]))
    bad["rows"][0]["latency_ms"]["p50"] = "fast"
    with pytest.raises(Exception, match="p50|fast"):
        validate(bad)


def test_csv_has_header_and_one_row_per_artifact_and_batch(cli_run) -> None:
    with open(cli_run["csv"], newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames[:3] == ["name", "artifact", "format"] and "p99_ms" in reader.fieldnames
    assert len(rows) == len(cli_run["json"]["rows"]) == 6
    assert sorted((r["format"], r["mode"], int(r["batch"])) for r in rows) == sorted(
        (r["format"], r["mode"], r["batch"]) for r in cli_run["json"]["rows"])
    assert all(float(r["p50_ms"]) > 0 for r in rows)


def test_html_report_is_self_contained_with_png_plots(cli_run) -> None:
    text = cli_run["html"].read_text()
    assert text.startswith("<!doctype html>") and "cnn_tf.onnx" in text and "GFLOP/s" in text
    images = text.split('src="data:image/png;base64,')[1:]
    assert len(images) == 5  # latency, throughput, memory, size, fraction of peak
    for img in images:
        assert base64.b64decode(img.split('"', 1)[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in text and "https://" not in text  # nothing fetched from elsewhere


def test_table_writes_sizes_and_speed_ups_as_the_readme_does(cli_run) -> None:
    from modelkit.bench.report import table_rows

    headers, cells = table_rows(cli_run["json"])
    by = {(r["mode"], r["format"], r["batch"]): c for r, c in zip(cli_run["json"]["rows"], cells)}
    onnx = dict(zip(headers, by["run", "onnx", 1]))
    assert onnx["size"].endswith(" KB") and float(onnx["size"].split()[0]) > 1  # not "0.0" MB
    speedup = onnx["vs predict"]
    assert speedup.endswith("x") and float(speedup[:-1]) > 1  # onnxruntime is faster than model.predict: > 1
    assert dict(zip(headers, by["keras.predict", "keras", 1]))["vs predict"] == "1x"  # as the README writes it


def test_a_baseline_that_cannot_load_names_no_baseline(cnn_onnx, tmp_path) -> None:
    import shutil

    from click.testing import CliRunner

    from modelkit.cli import main
    from modelkit.formats import manifest_path
    from modelkit.manifest import sha256_of

    src = tmp_path / "broken.keras"
    src.write_bytes(b"not a zip")  # the source the manifest names, now unreadable
    onnx = tmp_path / cnn_onnx.name
    shutil.copy(cnn_onnx, onnx)
    doc = json.loads(manifest_path(cnn_onnx).read_text())
    doc["source"]["path"] = str(src)
    doc["source"]["sha256"] = sha256_of(src)  # the recorded source itself (another file there is not the baseline)
    manifest_path(onnx).write_text(json.dumps(doc))
    r = CliRunner().invoke(main, ["bench", str(onnx), "--batch", "1", "--iterations", "2"])
    assert r.exit_code == 2, r.output
    (line,) = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert line.startswith("error: the Keras baseline broken.keras could not run: ") and "--no-baseline" in line
    r = CliRunner().invoke(main, ["bench", str(onnx), "--batch", "1", "--iterations", "2", "--no-baseline"])
    assert r.exit_code == 0, r.output
