"""optimize.build's memory of failed builds: what a rerun may skip, and what it must try again."""
from __future__ import annotations

import pytest

from modelkit.errors import ConversionError
from modelkit.optimization import build as _build

B = {"build": "onnx-fp32", "format": "onnx", "quantize": None, "engine": "onnxruntime", "status": "planned",
     "reason": None}
GATE = {"model_sha256": "0" * 64, "data": None, "calibration": None, "data_sha256": None, "max_accuracy_drop": 0.01,
        "batch": 1}


@pytest.fixture
def failing(monkeypatch, tmp_path):
    calls = []

    def convert(source, b, work, gate, timeout):
        calls.append(timeout)
        raise ConversionError("the conversion failed")

    monkeypatch.setattr(_build, "_convert", convert)
    monkeypatch.delenv("MODELKIT_IMPORTS", raising=False)
    return calls, tmp_path / "m.keras", tmp_path / "work"


def test_a_remembered_failure_is_not_tried_again_but_naming_a_module_tries_it(failing, monkeypatch, tmp_path):
    calls, src, work = failing
    work.mkdir()
    first = _build.build(src, B, work, GATE)
    again = _build.build(src, B, work, GATE)
    assert (first["status"], first["cached"], again["status"], again["cached"]) == ("failed", False, "failed", True)
    assert len(calls) == 1
    layers = tmp_path / "layers.py"
    layers.write_text("")
    monkeypatch.setenv("MODELKIT_IMPORTS", str(layers))  # what --import sets
    assert not _build.build(src, B, work, GATE)["cached"] and len(calls) == 2


def test_a_failure_remembered_by_another_modelkit_version_is_tried_again(failing, monkeypatch):
    from modelkit import _version

    calls, src, work = failing
    work.mkdir()
    _build.build(src, B, work, GATE)
    monkeypatch.setattr(_version, "__version__", "9.9.9")  # an upgraded modelkit may build what this one could not
    again = _build.build(src, B, work, GATE)
    assert (again["status"], again["cached"], len(calls)) == ("failed", False, 2)
    assert _build.build(src, B, work, GATE)["cached"] and len(calls) == 2  # and remembers its own failure


def test_a_build_the_budget_cut_short_is_not_remembered(failing):
    calls, src, work = failing
    work.mkdir()
    assert _build.build(src, B, work, GATE, timeout=0.0)["status"] == "failed"
    assert not _build.build(src, B, work, GATE, timeout=0.0)["cached"] and len(calls) == 2
    assert not (work / "failed.json").exists()


def test_an_int8_build_calibrated_on_other_samples_is_built_again(monkeypatch, tmp_path):
    """A reused int8 artifact was the one calibrated on whatever an earlier run used: --calibration-data (or new
    --data) changed nothing, not even a wrong-shaped calibration file was noticed."""
    import numpy as np

    calls = []

    def convert(source, b, work, gate, timeout):
        calls.append(gate["calibration"])
        dest = _build.artifact_path(source, b, work)
        dest.write_bytes(f"calibrated on {gate['calibration']}".encode())

    monkeypatch.setattr(_build, "_convert", convert)
    monkeypatch.setattr(_build, "_valid", lambda dest, sha: dest.exists())  # made from this model, checked
    monkeypatch.delenv("MODELKIT_IMPORTS", raising=False)
    src, work = tmp_path / "m.keras", tmp_path / "work"
    work.mkdir()
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(a, x=np.zeros((4, 2)))
    np.savez(b, x=np.ones((4, 2)))
    int8 = {**B, "build": "onnx-int8", "quantize": "int8"}
    assert not _build.build(src, int8, work, {**GATE, "calibration": str(a)})["cached"]
    assert _build.build(src, int8, work, {**GATE, "calibration": str(a)})["cached"] and len(calls) == 1
    assert not _build.build(src, int8, work, {**GATE, "calibration": str(b)})["cached"] and calls[-1] == str(b)
    assert _build.build(src, B, work, GATE)["status"] == "built" and _build.build(src, B, work, GATE)["cached"]


def test_the_shortest_budget_accepted_leaves_time_to_build(monkeypatch, tmp_path):
    """--budget 20s passed the 'at least 20 s' check, then kept all 20 s for measuring: every build skipped, and
    'no candidate was measured'."""
    import time

    from modelkit import optimization

    class Bar:
        def advance(self, message=None):
            pass

    monkeypatch.setattr(_build, "build", lambda source, b, work, gate, timeout, tune_budget: {**b, "status": "built"})
    done = optimization._build_all(tmp_path / "m.keras", [dict(B)], tmp_path, GATE, time.monotonic() + 20, 20.0, Bar())
    assert [d["status"] for d in done] == ["built"]


def test_the_keras_baseline_is_measured_and_cached_per_backend(monkeypatch, tmp_path):
    """Keras predict took ~40 ms a call on tensorflow and ~1 ms on torch here, and the baseline followed whatever
    KERAS_BACKEND the shell had, with one cache entry for both: a rerun under the other backend reused the figure
    and the 'Nx the speed of Keras predict' claim changed 40-fold unannounced."""
    from modelkit import _backend, optimization
    from modelkit.optimization import stages

    monkeypatch.setattr(_backend, "loaded_backend", lambda: None)  # as in the CLI: no Keras in the parent
    model = tmp_path / "m.keras"
    model.write_bytes(b"any bytes")
    keys, backends = set(), []
    for backend in ("tensorflow", "torch"):
        monkeypatch.setenv("KERAS_BACKEND", backend)
        base = optimization._baseline(model)
        backends.append(base["backend"])
        keys.add(stages.measurement_key(base, 1, None))
    assert backends == ["tensorflow", "torch"] and len(keys) == 2


def test_a_measurement_is_cached_by_the_rows_it_ran_on_not_only_by_the_users_file(monkeypatch, tmp_path):
    """Accuracy is measured on the evaluation rows split off --data; keyed by the user's file alone, a cached
    accuracy from another split (an earlier modelkit's) was compared with a fresh Keras one: an exact fp32 build
    showed an accuracy drop of 0.0049."""
    from modelkit.optimization import measure as _measure_mod
    from modelkit.optimization import stages

    def fake(todo, batch, data, rounds, deadline):
        for c in todo:
            c.update(status="measured", p50_ms=1.0, p99_ms=1.0, ci95_ms=[1.0, 1.0], rounds_ms=[1.0], calls=3,
                     accuracy=0.9, load_s=0.1, batch=batch)
        return todo

    class Bar:
        def note(self, message):
            pass

        def advance(self, message=None):
            pass

    monkeypatch.setattr(_measure_mod, "measure", fake)
    cand = {**B, "status": "built", "key": "onnx-fp32-t1", "threads": 1, "sha256": "1" * 64, "path": "/x.onnx"}
    runs = []
    for eval_sha in ("a" * 64, "b" * 64):
        prepared = {"data": "/d/eval/test.npz", "data_sha256": "0" * 64, "eval_sha256": eval_sha}
        out = stages.staged([dict(cand)], 1, prepared, (1,), tmp_path, 1e12, 1, Bar())
        runs.append(out[0].get("from_cache", False))
    assert runs == [False, False]
