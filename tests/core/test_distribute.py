"""Scaling out: data-parallel over 2 host CPU devices and multi-worker over 2 local processes (JAX
distributed on 127.0.0.1), compared with single-device training on the same seed and global batch.

The three runs start together (threads, each waiting on its own child processes) so that their
framework imports overlap; each is bounded by a timeout. Worker 1 of the two-worker run is held back
before it evaluates and saves (the MODELKIT_TEST_WORKER_DELAY hook), so worker 0, which hosts JAX's
coordination service, always finishes first: before the orderly shutdown, worker 1 was then aborted.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from modelkit import manifest
from modelkit.core.distribute import DELAY_ENV, epoch_rows, run_distributed
from modelkit.core.train import resolve_config, train
from modelkit.errors import TrainingError
from modelkit.keras_io.files import load_keras

# Same seed, same global batch, same data order: the runs differ only in how each global batch's
# gradient is summed (per device, then all-reduced). float32 reassociation: ~1e-7 relative per step.
WEIGHT_ATOL = 1e-5
BASE = {"model": "mlp", "epochs": 2, "backend": "jax", "batch_size": 32, "learning_rate": 0.01, "verbose": False,
        "timeout": 900}  # bounds each run; generous, as the three runs share 2 cores (and maybe CPU hogs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("distribute")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DELAY_ENV, "1:5")  # only the two-worker run has a process 1
        return _three_runs(folder)


def _three_runs(folder: Path) -> dict[str, dict]:
    kinds = {"single": {"devices": 1, "workers": 1}, "devices2": {"devices": 2}, "workers2": {"workers": 2}}
    cfgs = {k: resolve_config(out=folder / f"{k}.keras", **BASE, **kw) for k, kw in kinds.items()}
    with ThreadPoolExecutor(len(cfgs)) as pool:
        futures = {k: pool.submit(run_distributed, cfg) for k, cfg in cfgs.items()}
        return {k: f.result() for k, f in futures.items()}


def _weights(path: str) -> list[np.ndarray]:
    return load_keras(path).get_weights()


@pytest.mark.slow
def test_data_parallel_on_two_devices_matches_single_device(runs) -> None:
    single, dp = runs["single"], runs["devices2"]
    assert dp["distribution"] == {"strategy": "DataParallel", "devices": 2, "workers": 1, "global_batch": 32}
    assert single["distribution"]["devices"] == 1
    diffs = [float(np.abs(a - b).max()) for a, b in zip(_weights(single["path"]), _weights(dp["path"]))]
    assert max(diffs) < WEIGHT_ATOL
    np.testing.assert_allclose(dp["history"]["loss"], single["history"]["loss"], rtol=1e-5)
    assert dp["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=1 / 360) and dp["test_accuracy"] > 0.8


def test_two_worker_processes_agree_and_match(runs) -> None:
    mw, dp, single = runs["workers2"], runs["devices2"], runs["single"]
    assert mw["distribution"]["workers"] == 2 and mw["distribution"]["devices"] == 2
    assert len(mw["workers_weights_sha256"]) == 2 and len(set(mw["workers_weights_sha256"])) == 1
    # 2 processes x 1 device computes what 1 process x 2 devices does: the same all-reduce over 2 shards
    for a, b in zip(_weights(mw["path"]), _weights(dp["path"])):
        np.testing.assert_allclose(a, b, atol=1e-6)
    diffs = [float(np.abs(a - b).max()) for a, b in zip(_weights(mw["path"]), _weights(single["path"]))]
    assert max(diffs) < WEIGHT_ATOL
    man = manifest.read(mw["path"])
    assert man.training["distribution"]["workers"] == 2 and man.training["backend"] == "jax"


def test_epoch_rows_split_each_global_batch() -> None:
    a = epoch_rows(100, 32, seed=0, epoch=1, process_id=0, num_processes=2)
    b = epoch_rows(100, 32, seed=0, epoch=1, process_id=1, num_processes=2)
    whole = epoch_rows(100, 32, seed=0, epoch=1, process_id=0, num_processes=1)
    assert len(a) == len(b) == 48 and len(whole) == 96  # 3 full global batches; 4 rows left out
    np.testing.assert_array_equal(np.concatenate([a[:16], b[:16]]), whole[:32])  # batch 1 = both halves
    assert not np.array_equal(whole, epoch_rows(100, 32, seed=0, epoch=2, process_id=0, num_processes=1))


def test_worker_0_finishing_first_waits_for_the_others(runs) -> None:
    """Worker 1 was held back 5 s after training, so worker 0 (the coordination service's host) reached
    the end first; both results came back (the fixture would have raised TrainingError otherwise)."""
    mw = runs["workers2"]
    assert mw["process_id"] == 0 and mw["path"] and Path(mw["path"]).is_file()
    assert len(mw["workers_weights_sha256"]) == 2


@pytest.mark.slow
def test_a_worker_that_never_finishes_is_a_typed_error_within_the_timeout(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(DELAY_ENV, "1:3600")
    cfg = resolve_config(out=tmp_path / "m.keras", **{**BASE, "epochs": 1, "timeout": 120}, workers=2)
    t0 = time.monotonic()
    with pytest.raises(TrainingError, match=r"worker 0 finished, but the other workers did not reach the end"):
        run_distributed(cfg)
    assert time.monotonic() - t0 < 120 + 30
    assert not (tmp_path / "m.keras").exists() or manifest.read(tmp_path / "m.keras") is not None


def test_errors_before_any_process_starts(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="needs the JAX backend"):
        train(model="mlp", backend="tensorflow", workers=2, out=tmp_path / "m.keras")
    with pytest.raises(TrainingError, match="must split evenly over 2 worker"):
        train(model="mlp", backend="jax", workers=2, batch_size=33, out=tmp_path / "m.keras")
    assert not list(tmp_path.iterdir())
