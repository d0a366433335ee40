"""Tuning: a short MetaSchedule run on the tiny model into the shared database, reused without new trials by
the same model and, task by task, by another model with the same layers."""
import json
from pathlib import Path

import numpy as np
import pytest

import modelkit
from modelkit.targets.tvm import tuning
from tests.helpers import cli_process, ctrl_c, make_tiny_onnx

pytest.importorskip("tvm")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    from modelkit.targets import compile

    folder = tmp_path_factory.mktemp("tuned")
    onnx_path = make_tiny_onnx(folder / "tiny.onnx")
    cache = folder / "cache"
    first = compile(onnx_path, target="server-cpu", trials=4, cache_dir=cache)
    return first, onnx_path, cache


def test_short_tuning_run_records_trials(tuned):
    first, onnx_path, cache = tuned
    info = first.tuning
    assert info["reused"] is False and info["trials_run"] == 4 and info["records_before"] == 0
    db = Path(info["cache_dir"])
    assert db.parent == cache / "db" and tuning.count_records(db) == 4
    assert info["tasks"] == 2 and info["best_latency_us"] > 0
    assert info["tasks_from_db"] == 0 and info["tasks_tuned"] == 1  # one batch of 4: the heavier task
    assert first.batch == 1 and first.parity["ok"] and {c["batch"] for c in first.parity["cases"]} == {1}
    m = modelkit.load(first.path)
    x = np.random.default_rng(3).random((1, 4), dtype=np.float32)
    np.testing.assert_allclose(m.predict(x)["probs"], modelkit.load(onnx_path).predict(x)["probs"], atol=1e-5)


def test_second_compile_reuses_the_database_without_trials(tuned):
    from modelkit.targets import compile

    first, onnx_path, cache = tuned
    db = Path(first.tuning["cache_dir"])
    records = (db / tuning.RECORDS).read_bytes()
    second = compile(onnx_path, target="server-cpu", trials=4, cache_dir=cache, force=True)
    assert second.tuning["reused"] is True and second.tuning["trials_run"] == 0
    assert second.tuning["tasks_tuned"] == 0 and second.tuning["tasks_from_db"] >= 1
    assert (db / tuning.RECORDS).read_bytes() == records  # not one new trial
    assert second.parity["ok"]
    manifest = json.loads(Path(second.path + ".modelkit.json").read_text())
    assert manifest["extra"]["tuning"]["reused"] is True and manifest["chain"][-1]["options"]["trials"] == 4


def test_tuning_times_the_default_schedule_as_a_baseline_outside_the_trial_count(tuned):
    from modelkit.targets.tvm import baseline

    info = tuned[0].tuning
    assert info["baseline"]["measured"] == info["tasks"] == 2 and info["baseline"]["failed"] == 0
    db = Path(info["cache_dir"])
    assert tuning.count_records(baseline.folder(db)) == 2  # one per task, apart from the 4 trials
    assert info["tasks_default_faster"] in (0, 1)  # only the one tuned task has both kinds of record


def _tiny_tasks(onnx_path: Path):
    """The tiny model's tuning tasks and target, as a batch-1 tuned compile extracts them."""
    import onnx
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from modelkit.targets import registry
    from modelkit.targets.tvm import compile as tvm_compile

    target = tvm.target.Target(registry.get("server-cpu").tvm)
    mod, _, _ = tvm_compile._import(onnx.load(str(onnx_path)), onnx_path.name, 1)
    return ms.relax_integration.extract_tasks(tvm_compile._prepare(mod, target), target), target


def _claim_run_secs(db: Path, seconds: float) -> None:
    """Rewrite every tuning record of the database at db as measured at `seconds`."""
    lines = [json.loads(line) for line in (db / tuning.RECORDS).read_text().splitlines() if line.strip()]
    for line in lines:
        line[1][1] = [seconds]
    (db / tuning.RECORDS).write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.mark.slow
@pytest.mark.parametrize("tuned_s, expect", [(10.0, "default"), (1e-9, "tuned")])
def test_the_build_applies_the_faster_of_the_tuned_record_and_the_default_schedule(tuned, tmp_path, tuned_s,
                                                                                   expect):
    """A tuned record slower than the default schedule is not applied: the union of the two databases returns,
    per workload, the faster record (here the tuned one is claimed 10 s, or 1 ns)."""
    import shutil

    from tvm.s_tir import meta_schedule as ms

    from modelkit.targets import compile
    from modelkit.targets.tvm import baseline, default_schedule, tuning_db

    first, onnx_path, cache = tuned
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    db = copy / Path(first.tuning["cache_dir"]).relative_to(cache)
    _claim_run_secs(db, tuned_s)
    tasks, target = _tiny_tasks(onnx_path)
    shared = tuning_db.open_shared(db).inner
    union = baseline.with_baseline(ms, shared, baseline.load(db))
    both = [t for t in tasks if tuning_db.valid_records(shared, t.dispatched[0], 1)]
    assert len(both) == 1  # the task the 4 trials went to
    mod = both[0].dispatched[0]
    applied = union.query_tuning_record(mod, target, "main")
    default = default_schedule.traced(mod, target)
    assert (str(applied.trace) == str(default.trace)) is (expect == "default")
    result = compile(onnx_path, target="server-cpu", trials=4, cache_dir=copy, force=True)  # this model is done:
    assert result.tuning["reused"] and result.tuning["tasks_default_faster"] == (expect == "default")  # no trials
    assert result.parity["ok"]


def _tiny_variant(path: Path, softmax: bool = True, head: bool = True) -> Path:
    """The tiny model's first layer (x @ W + b, other weights), then its softmax over 3 and a new layer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("W", (4, 3)), ("b", (3,)), ("W2", (3, 2)))][: 3 if head else 2]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["logits"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
    if head:
        nodes.append(helper.make_node("MatMul", [nodes[-1].output[0], "W2"], ["y"]))
    out = nodes[-1].output[0]
    graph = helper.make_graph(nodes, "tiny_variant",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", 2 if head else 3])],
                              inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_another_model_with_the_tuned_layer_takes_it_from_the_database_without_tuning(tuned, capfd):
    """Records are keyed by workload, not by model: a model that is the tiny model's tuned first layer
    (other weights, no softmax) finds it in the shared database and tunes nothing."""
    from modelkit.targets import compile

    first, onnx_path, cache = tuned
    db = Path(first.tuning["cache_dir"])
    records = (db / tuning.RECORDS).read_bytes()
    capfd.readouterr()
    result = compile(_tiny_variant(onnx_path.parent / "tiny_logits.onnx", softmax=False, head=False),
                     target="server-cpu", trials=4, cache_dir=cache)
    info = result.tuning
    assert info["cache_dir"] == str(db)  # one database per target, whatever the model
    assert info["tasks"] == 1 and info["tasks_from_db"] == 1 and info["tasks_tuned"] == 0
    assert info["trials_run"] == 0 and info["reused"] is True
    assert (db / tuning.RECORDS).read_bytes() == records
    assert "[tune] all 1 tasks are tuned there: 1 of 1 tasks from the database" in capfd.readouterr().err
    assert result.parity["ok"]


@pytest.mark.slow
def test_another_model_takes_the_shared_layers_from_the_database_and_tunes_only_its_new_ones(tuned, capfd):
    """Records are keyed by workload, not by model: a model with the tiny model's layers and one more
    takes the layer tuned for the tiny model from the database and spends its trials on the others."""
    from modelkit.targets import compile

    first, onnx_path, cache = tuned
    db = Path(first.tuning["cache_dir"])
    before = tuning.count_records(db)
    other = _tiny_variant(onnx_path.parent / "tiny_head.onnx")
    capfd.readouterr()
    result = compile(other, target="server-cpu", trials=4, cache_dir=cache)
    info = result.tuning
    assert info["cache_dir"] == str(db)  # one database per target, whatever the model
    assert info["tasks"] == 3 and info["tasks_from_db"] >= 1  # the tiny model's tuned layer
    assert info["trials_run"] == 4 and info["records_before"] == 0 and info["tasks_tuned"] == 1
    assert info["tasks_tuned"] + info["tasks_from_db"] <= info["tasks"]  # a task from the database is not tuned
    assert tuning.count_records(db) == before + 4 and info["database_records"] == before + 4
    assert f"[tune] 3 tasks: {info['tasks_from_db']} from the database" in capfd.readouterr().err
    assert result.parity["ok"]
    ledgers = sorted(tuning.read_ledger(p)[0] for p in (db / tuning.MODELS).glob("*.json"))
    assert ledgers == [4, 4]  # each model's own trials: its rerun tunes nothing (as the tiny model's above)


def test_the_database_is_keyed_by_target_and_tvm_not_by_model(tmp_path):
    base = tuning.database_dir(tmp_path, {"kind": "llvm"}, "0.27")
    assert base.parent == tmp_path / "db" and base == tuning.database_dir(tmp_path, {"kind": "llvm"}, "0.27")
    assert len({base, tuning.database_dir(tmp_path, {"kind": "llvm", "mcpu": "x"}, "0.27"),
                tuning.database_dir(tmp_path, {"kind": "llvm"}, "0.28")}) == 3


def test_enough_records_is_the_requests_share_per_task():
    assert tuning.enough_records(4, 3) == 2 and tuning.enough_records(64, 9) == 8 and tuning.enough_records(1, 9) == 1
    assert tuning.enough_records(None, 9) == tuning.TRIALS_PER_ITER  # a budget alone: one batch


def test_cache_key_separates_models_targets_and_batches():
    base = tuning.cache_key("a" * 64, {"kind": "llvm"}, 1, "0.27")
    assert base == tuning.cache_key("a" * 64, {"kind": "llvm"}, 1, "0.27")
    assert len({base, tuning.cache_key("b" * 64, {"kind": "llvm"}, 1, "0.27"),
                tuning.cache_key("a" * 64, {"kind": "llvm", "mcpu": "x"}, 1, "0.27"),
                tuning.cache_key("a" * 64, {"kind": "llvm"}, 2, "0.27")}) == 4


def test_cache_dir_follows_modelkit_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELKIT_CACHE_DIR", str(tmp_path))
    assert tuning.cache_root() == tmp_path / "tvm"


def test_record_count_ignores_a_line_cut_by_an_interrupt(tmp_path):
    (tmp_path / tuning.RECORDS).write_bytes(b'[1, {"a": 1}]\n[2, {"b": 2}]\n[3, {"c"')
    assert tuning.count_records(tmp_path) == 2


@pytest.mark.slow
def test_budget_stops_tuning_within_one_batch_then_the_spent_budget_is_reused(converted, tmp_path):
    """MetaSchedule's own schedulers cannot stop before every task was tried once; modelkit's stops at the
    first batch that ends after the budget, with each batch committed as it is measured."""
    from modelkit.targets import compile

    onnx_path = converted["tensorflow"]["onnx"]
    cache = tmp_path / "cache"
    first = compile(onnx_path, out=tmp_path / "a.tvm.so", budget="25s", cache_dir=cache)
    info = first.tuning  # the budget includes timing the 9 default schedules (baseline.py: ~7 s on 2 cores)
    assert info["budget_spent"] is True and info["interrupted"] is False
    assert 25 <= info["seconds"] < 25 + 45  # one batch of 4 candidates, even on a loaded 2-core machine
    assert info["trials_run"] >= 4 and info["tasks"] == 9 and info["tasks_tried"] >= 1
    db = Path(info["cache_dir"])
    (ledger,) = (db / tuning.MODELS).glob("*.json")
    assert tuning.count_records(db) == info["trials_run"] and tuning.spent_seconds(ledger) >= 25
    assert first.parity["ok"]
    again = compile(onnx_path, out=tmp_path / "b.tvm.so", budget="25s", cache_dir=cache)
    assert again.tuning["reused"] is True and again.tuning["trials_run"] == 0


@pytest.mark.slow
def test_ctrl_c_in_the_first_round_keeps_the_records_and_the_next_run_resumes(converted, tmp_path):
    """A real SIGINT to `modelkit compile --budget 10m` while the first of 9 tasks has been measured."""
    import time

    from modelkit.targets import compile

    onnx_path = tmp_path / "cnn.onnx"
    onnx_path.write_bytes(Path(converted["tensorflow"]["onnx"]).read_bytes())
    cache = tmp_path / "cache"
    with cli_process("compile", str(onnx_path), "--budget", "10m", "--cache-dir", str(cache)) as proc:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if sum(tuning.count_records(d) for d in cache.glob("db/*")) >= 4:
                break
            time.sleep(0.3)
        out = ctrl_c(proc, timeout=150)
    assert proc.returncode == 2, out[-2000:]
    assert "error: tuning interrupted" in out and "run the same command again to resume" in out
    (db,) = cache.glob("db/*")
    kept = tuning.count_records(db)
    assert kept >= 4 and f"{kept} records kept" in out
    assert "tasks tried 1/9" in out  # stopped inside the first round
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "cnn.onnx"]  # no library, no partial file
    (ledger,) = (db / tuning.MODELS).glob("*.json")
    assert tuning.read_ledger(ledger)[0] == kept  # the model's own trials
    spent = tuning.spent_seconds(ledger)
    assert spent is not None and 0 < spent < 600
    assert tuning._plan(kept, spent, None, 600.0) == (1_000_000, pytest.approx(600.0 - spent))
    resumed = compile(onnx_path, trials=kept + 4, cache_dir=cache)  # 4 more trials on top of the kept ones
    assert resumed.tuning["records_before"] == kept and resumed.tuning["trials_run"] == 4
    assert resumed.parity["ok"]


def test_plan_counts_trials_and_budget_as_totals_for_the_model():
    assert tuning._plan(0, None, 8, None) == (8, None)
    assert tuning._plan(5, 3.0, 8, None) == (3, None)
    assert tuning._plan(8, 3.0, 8, None) is None              # enough records: reuse
    assert tuning._plan(0, None, None, 60.0) == (1_000_000, 60.0)
    assert tuning._plan(12, 20.0, None, 60.0) == (1_000_000, 40.0)  # interrupted after 20 s: 40 s left
    assert tuning._plan(12, 60.2, None, 60.0) is None         # budget spent: reuse
    assert tuning._plan(0, None, None, 60.0) == (1_000_000, 60.0)  # no ledger: other models' records don't count
    assert tuning._plan(12, None, 20, 60.0) == (8, 60.0)


def test_the_ledger_survives_a_missing_or_corrupt_file(tmp_path):
    ledger = tuning.ledger_path(tmp_path, "m")
    assert tuning.read_ledger(ledger) == (0, None) and tuning.spent_seconds(ledger) is None
    ledger.parent.mkdir()
    ledger.write_text("{not json")
    assert tuning.read_ledger(ledger) == (0, None)
    tuning.save_ledger(ledger, 8, 12.345)
    assert tuning.read_ledger(ledger) == (8, 12.3) and tuning.spent_seconds(ledger) == 12.3


@pytest.mark.slow
def test_preloading_tensor_intrinsics_leaves_inspect_unpatched():
    import subprocess
    import sys

    code = ("import inspect, sys; g = inspect.getmodule; from modelkit.targets.tvm.builder import "
            "preload_tensor_intrinsics as p; p(); assert inspect.getmodule is g; "
            "assert 'tvm.s_tir.tensor_intrin.x86' in sys.modules; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.slow
def test_budgeted_tuning_of_the_cnn_stops_and_improves(converted, tmp_path):
    from modelkit.targets import compile

    onnx_path = converted["tensorflow"]["onnx"]
    result = compile(onnx_path, out=tmp_path, budget="90s", cache_dir=tmp_path / "cache")
    assert result.tuning["budget_spent"] and result.tuning["trials_run"] > 40
    assert result.tuning["seconds"] < 90 + 45  # stops within one batch of the budget
    assert result.tuning["tasks_tried"] == 9 and result.parity["ok"]


@pytest.mark.slow
def test_long_tuning_of_the_cnn(converted, tmp_path):
    from modelkit.targets import compile
    from modelkit.targets.tvm.tuning import TRIALS_PER_ITER

    result = compile(converted["tensorflow"]["onnx"], out=tmp_path, trials=64, cache_dir=tmp_path / "cache")
    # stops at the first batch that reaches 64; one-candidate tasks (squeeze, reshape) shift the batches
    assert 64 <= result.tuning["trials_run"] < 64 + TRIALS_PER_ITER and result.parity["ok"]
