"""Browser bundles, proven in a real headless Chromium (Debian's, installed by `make setup`)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import modelkit
from modelkit.cli import main

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None,
                                reason="Debian's chromium is not installed (make setup installs it as root)")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def bundle(cnn_tf, tmp_path_factory):
    from modelkit.web.bundle import build_bundle

    out = tmp_path_factory.mktemp("web") / "bundle"
    build_bundle(cnn_tf, out)
    return out


def test_bundle_is_self_contained(bundle):
    names = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert names == ["bundle.json", "index.html", "model.onnx", "modelkit.js", "ort/ort-wasm-simd-threaded.mjs",
                     "ort/ort-wasm-simd-threaded.wasm", "ort/ort.wasm.min.mjs", "signature.json"]
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["signature"]["inputs"][0]["name"] == "image" and info["onnx_parity"]["ok"]
    assert info["runtime"]["onnxruntime-web"] == "1.30.0"
    html = (bundle / "index.html").read_text() + (bundle / "modelkit.js").read_text()
    assert "http://" not in html and "https://" not in html  # nothing fetched from a CDN


def test_parity_in_chromium_is_recorded(bundle, cnn_tf):
    from modelkit.web.verify import verify_bundle

    ARTIFACTS.mkdir(exist_ok=True)
    parity = verify_bundle(bundle, reference=cnn_tf, batch_sizes=(1, 7), screenshot=ARTIFACTS / "browser-bundle.png")
    assert parity["ok"] and parity["max_abs"]["probs"] <= 1e-4 and parity["argmax_agreement"] == 1.0
    assert parity["inputs"] == "digits test split (real samples)"
    assert json.loads((bundle / "bundle.json").read_text())["browser_parity"]["ok"] is True
    assert (ARTIFACTS / "browser-bundle.png").stat().st_size > 5000


def test_drawing_a_digit_shows_the_models_prediction(bundle):
    from modelkit.web.browser import BrowserSession

    with BrowserSession(bundle) as s:
        shown = s.draw([[(112, 30), (112, 225)]])  # one vertical stroke through column 3
        page_input = np.asarray(s.page.evaluate("Array.from(window.lastInput)"), np.float32).reshape(1, 8, 8, 1)
        probs = s.page.evaluate("window.lastPrediction.probs")
        s.screenshot(ARTIFACTS / "browser-draw.png") if ARTIFACTS.exists() else None
    assert shown["shown"] == str(shown["label"]) and 0 <= shown["label"] <= 9
    assert abs(sum(probs) - 1.0) < 1e-4
    assert page_input.max() > 0.5 and page_input[0, :, 0, 0].max() == 0.0  # ink in the middle, none at the edge
    expected = modelkit.load(bundle / "model.onnx").predict(page_input)["probs"]
    assert int(expected.argmax()) == shown["label"]
    np.testing.assert_allclose(np.asarray(probs), expected[0], atol=1e-4)


def test_bad_input_is_refused_in_the_page(bundle):
    from modelkit.web.browser import BrowserSession

    with BrowserSession(bundle) as s:
        msg = s.page.evaluate("""async () => {
            try { await window.modelkit.predict({image: {data: new Float32Array(63), shape: [1, 7, 9, 1]}}); }
            catch (e) { return e.constructor.name + ": " + e.message; } }""")
        names = s.page.evaluate("""async () => {
            try { await window.modelkit.predict({img: new Float32Array(64)}); }
            catch (e) { return e.message; } }""")
    assert msg == "InputError: input 'image': dimension 1 must be 8, got shape [1,7,9,1]"
    assert "missing [image], unexpected [img]" in names


@pytest.mark.slow
def test_cli_packages_int8_bundle_with_accuracy_and_browser_parity(cnn_tf, tmp_path):
    out = tmp_path / "web-int8"
    r = CliRunner().invoke(main, ["package", str(cnn_tf), "--for", "browser", "--out", str(out),
                                  "--quantize", "dynamic-int8", "--verify-in-browser"])
    assert r.exit_code == 0, r.output
    info = json.loads((out / "bundle.json").read_text())
    assert info["model"]["quantization"] == "dynamic-int8" and info["model"]["size_bytes"] < 60_000
    assert info["onnx_accuracy"]["drop"] <= 0.01
    parity = info["browser_parity"]  # the int8 model in Chromium vs the same model under onnxruntime
    assert parity["ok"] and parity["max_abs"]["probs"] <= 1e-4 and parity["reference"].endswith("model.onnx")
    assert "browser parity OK" in r.output


def test_existing_bundle_is_not_overwritten(bundle, cnn_tf):
    r = CliRunner().invoke(main, ["package", str(cnn_tf), "--for", "browser", "--out", str(bundle)])
    assert r.exit_code == 2 and "exists" in r.output


def test_a_model_that_is_not_the_digits_cnn_gets_a_page_that_fits_its_signature(tiny_onnx, tmp_path):
    """No dead 'draw a digit' canvas: the signature as a table, and a run on random inputs of its shapes."""
    from modelkit.web.browser import BrowserSession
    from modelkit.web.bundle import build_bundle

    out = tmp_path / "bundle"
    build_bundle(tiny_onnx, out)
    with BrowserSession(out) as s:
        assert not s.page.is_visible("#digits") and not s.page.is_visible("#pad")
        assert s.page.is_visible("#generic")
        table = s.page.inner_text("#sig")
        s.page.click("#random")
        s.page.wait_for_function("window.lastOutput !== undefined", timeout=s.timeout_ms)
        shapes = s.page.evaluate("window.lastOutput")
    assert "input\tx\tfloat32 (?, 4)" in table and "output\tprobs\tfloat32 (?, 3)" in table
    assert shapes == {"probs": [1, 3]} and not s.errors
