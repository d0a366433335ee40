"""Scaling out with Keras' distribution API (JAX backend): data-parallel over the devices of one host
(`devices`) and over several processes (`workers`, JAX distributed, coordinator on 127.0.0.1).

Each worker is a child process (the modelkit._child protocol) with KERAS_BACKEND=jax and, so that a
CPU-only host has several devices to test with, XLA_FLAGS=--xla_force_host_platform_device_count=N
set before JAX is imported. Every process builds the same model (same seed), takes its slice of every
global batch and keras.distribution.DataParallel all-reduces the gradients, so the replicas stay equal.

Data order: one seeded permutation per epoch (numpy, seed + epoch), cut into global batches of
`batch_size` rows; process i feeds rows [i*b:(i+1)*b] of each global batch (b = batch_size / workers).
The rows that do not fill a whole global batch are left out of that epoch (every batch must split evenly
over the devices). Single-device training through this same path (devices=1, workers=1) sees exactly
the same batches, which is what makes the results comparable (see docs/training.md).
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic, _child, manifest
from ..errors import TrainingError
from ..keras_io import custom
from . import data as _data
from . import recipe
from .config import TrainConfig

DELAY_ENV = "MODELKIT_TEST_WORKER_DELAY"
DEFAULT_TIMEOUT = 1800.0  # seconds for the whole run; --timeout sets it
BARRIER_MARGIN_S = 5.0  # a worker gives up waiting for the others this long before the parent's deadline


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check(cfg: TrainConfig) -> None:
    if cfg.backend != "jax":
        raise TrainingError(f"--devices / --workers use Keras' distribution API, which needs the JAX backend "
                            f"(got '{cfg.backend}'); add --backend jax")
    if cfg.resume or cfg.tune:
        raise TrainingError("--devices / --workers do not combine with --resume or --tune")
    if cfg.batch_size % (cfg.devices * cfg.workers):
        raise TrainingError(f"batch_size {cfg.batch_size} must split evenly over {cfg.workers} worker(s) x "
                            f"{cfg.devices} device(s)")


def run_distributed(cfg: TrainConfig) -> dict[str, Any]:
    """Train over cfg.workers local processes with cfg.devices devices each; process 0 saves the model.

    Bounded by cfg.timeout (default DEFAULT_TIMEOUT): on timeout or any worker's failure, every worker
    is killed and TrainingError raised. The summary has each worker's weights digest (they must agree).
    """
    check(cfg)
    n = cfg.workers
    coordinator = f"127.0.0.1:{free_port()}"
    host_devices = f"--xla_force_host_platform_device_count={cfg.devices}"  # CPU; GPUs/TPUs ignore it
    env = _child.child_env("jax", {"XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {host_devices}".strip()})
    timeout = cfg.timeout or DEFAULT_TIMEOUT
    with tempfile.TemporaryDirectory(prefix="modelkit-workers-") as td:
        workers = []
        try:
            for i in range(n):
                kwargs = {"config": cfg.to_dict(), "process_id": i, "num_processes": n, "coordinator": coordinator,
                          "deadline": time.time() + timeout}
                workers.append(_child.start("modelkit.core.distribute:_worker", kwargs, Path(td) / f"worker{i}.json",
                                            env, error=TrainingError, what=f"worker {i}"))
            _wait(workers, timeout)
        finally:
            for w in workers:  # only our own children, by their Popen handle
                w.kill()
        results = [w.result() for w in workers]
    digests = {r["weights_sha256"] for r in results}
    if len(digests) != 1:
        raise TrainingError(f"the {n} workers ended with different weights (digests {sorted(digests)})")
    summary = results[0]
    summary["workers_weights_sha256"] = [r["weights_sha256"] for r in results]
    return summary


def _wait(workers: list[_child.Child], timeout: float) -> None:
    """Until every worker has exited; TrainingError at the first failure or past `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while any(w.proc.poll() is None for w in workers):
        failed = next((w for w in workers if w.failed()), None)
        if failed is not None:
            try:
                failed.result()
            except BaseException as exc:
                if not failed.out.is_file():  # "worker i died in its child process (exit code ...)"
                    raise
                raise TrainingError(f"{failed.what} failed: {type(exc).__name__}: {exc}") from exc
        if time.monotonic() > deadline:
            raise TrainingError(f"distributed training did not finish within {timeout:.0f} s; stopped all "
                                f"{len(workers)} workers (raise --timeout)")
        time.sleep(0.2)


def epoch_rows(n_rows: int, batch_size: int, seed: int, epoch: int | None, process_id: int,
               num_processes: int) -> np.ndarray:
    """The row indices process `process_id` feeds in `epoch`, in order (see the module docstring);
    epoch None: the rows in their order (validation)."""
    perm = np.arange(n_rows) if epoch is None else np.random.default_rng(abs(seed) + epoch).permutation(n_rows)
    perm = perm[: (n_rows // batch_size) * batch_size]
    local = batch_size // num_processes
    return perm.reshape(-1, num_processes, local)[:, process_id].reshape(-1)


def _worker(config: dict[str, Any], process_id: int, num_processes: int, coordinator: str,
            deadline: float | None = None) -> dict[str, Any]:
    """One training process (run by modelkit._child with KERAS_BACKEND=jax); `deadline` (time.time())
    bounds the final wait for the other workers, a little before the parent stops them all."""
    cfg = TrainConfig(**config)
    import jax

    if num_processes > 1:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, coordinator_bind_address=coordinator)
    from .._backend import import_keras
    from .callbacks import epoch_printer

    keras = import_keras("jax")
    custom.import_all(cfg.imports)
    devices = jax.devices()
    dist = keras.distribution.DataParallel(devices=devices)
    dist.auto_shard_dataset = False  # each process feeds its own slice (see epoch_rows)
    keras.distribution.set_distribution(dist)
    keras.utils.set_random_seed(cfg.seed)
    ds = _data.load(cfg.data, seed=cfg.seed, label_column=cfg.label_column)
    num_classes = ds.num_classes if ds.y_train.dtype.kind in "iu" else 1
    fit_idx, val_idx = recipe.validation_split(ds.y_train, cfg.seed)
    net = recipe.build_net(cfg, num_classes)
    steps = len(fit_idx) // cfg.batch_size
    if steps < 1:
        raise TrainingError(f"batch_size {cfg.batch_size} is larger than the {len(fit_idx)} training rows")
    net.compile(optimizer=recipe.optimizer(keras, cfg, steps), **recipe.loss_and_metrics(keras, cfg))
    feeder = recipe.Feeder(cfg, net)
    x_fit, y_fit = ds.x_train[fit_idx], ds.y_train[fit_idx]
    v = epoch_rows(len(val_idx), cfg.batch_size, cfg.seed, None, process_id, num_processes) \
        if len(val_idx) >= cfg.batch_size else None
    x_val, y_val = ds.x_train[val_idx], ds.y_train[val_idx]
    val = (feeder.x(x_val[v]), feeder.y(x_val[v], y_val[v])) if v is not None else None
    local_batch = cfg.batch_size // num_processes
    printer = [epoch_printer(keras, cfg.epochs, prefix=f"[{len(devices)} devices] ")] \
        if cfg.verbose and process_id == 0 else []
    history: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        rows = epoch_rows(len(fit_idx), cfg.batch_size, cfg.seed, epoch, process_id, num_processes)
        h = net.fit(feeder.x(x_fit[rows]), feeder.y(x_fit[rows], y_fit[rows]), batch_size=local_batch,
                    validation_data=val, validation_batch_size=local_batch, epochs=epoch + 1, initial_epoch=epoch,
                    shuffle=False, verbose=0, callbacks=printer)
        for k, vals in h.history.items():
            history.setdefault(k, []).extend(float(x) for x in vals)
    train_seconds = time.perf_counter() - t0
    weights = [np.asarray(w.value.addressable_data(0)) for w in net.weights]
    _test_delay(process_id)
    net, summary = _evaluate(keras, cfg, weights, history, train_seconds, ds, len(devices), process_id,
                             num_processes)
    if num_processes == 1:
        return _save(cfg, net, summary, ds)
    left = (deadline - time.time() - BARRIER_MARGIN_S) if deadline else DEFAULT_TIMEOUT
    _wait_for_all(process_id, max(1.0, left))
    try:  # every worker has its result: only now does worker 0 write the model
        return _save(cfg, net, summary, ds) if process_id == 0 else summary
    finally:
        jax.distributed.shutdown()  # itself a barrier; then worker 0 stops the service it hosts: it leaves last


def _wait_for_all(process_id: int, timeout: float) -> None:
    """Every worker waits here until all have evaluated, bounded by `timeout` seconds (TrainingError).

    Worker 0 hosts JAX's coordination service: had it saved and exited while another worker was still
    evaluating, that worker's coordination agent would abort it ("Socket closed") and its result would
    be lost. After this barrier, worker 0 saves the model and all shut down together.
    """
    from jax._src.distributed import global_state  # the client's barrier (no public wrapper takes a timeout)

    try:
        global_state.client.wait_at_barrier("modelkit_workers_done", int(timeout * 1000))
    except Exception as exc:  # noqa: BLE001 - jax raises its runtime error type (DEADLINE_EXCEEDED, ...)
        why = str(exc).split(".", 1)[0] if str(exc) else type(exc).__name__
        raise TrainingError(f"worker {process_id} finished, but the other workers did not reach the end within "
                            f"{timeout:.0f} s more ({why}); see their output above") from exc


def _test_delay(process_id: int) -> None:
    """Test hook: MODELKIT_TEST_WORKER_DELAY='ID:SECONDS' makes worker ID finish that much later."""
    spec = os.environ.get(DELAY_ENV, "")
    if spec.partition(":")[0] == str(process_id):
        time.sleep(float(spec.partition(":")[2]))


def _evaluate(keras: Any, cfg: TrainConfig, weights: list[np.ndarray], history: dict[str, list[float]],
              train_seconds: float, ds: Any, n_devices: int, process_id: int, num_processes: int
              ) -> tuple[Any, dict[str, Any]]:
    """Rebuild the trained model without a distribution (a plain Keras model) and evaluate it."""
    import hashlib

    digest = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in weights)).hexdigest()
    if not np.isfinite(history.get("loss", [np.nan])[-1]):
        raise TrainingError(f"training diverged (loss {history.get('loss')}); lower the learning rate")
    keras.distribution.set_distribution(None)
    net = recipe.build_net(cfg, ds.num_classes if ds.y_train.dtype.kind in "iu" else 1)
    net.set_weights(weights)
    net.compile(optimizer=recipe.optimizer(keras, cfg, 1), **recipe.loss_and_metrics(keras, cfg))
    task = recipe.task_of(cfg)
    metrics = recipe.test_metrics(keras, net, recipe.Feeder(cfg, net), ds, task)
    training = {"model": cfg.model, "data": cfg.data, "backend": "jax", "epochs": cfg.epochs,
                "optimizer": cfg.optimizer, "learning_rate": cfg.learning_rate, "schedule": cfg.schedule,
                "l1": cfg.l1, "l2": cfg.l2, "dropout": cfg.dropout, "batch_size": cfg.batch_size, "seed": cfg.seed,
                "task": task, "distribution": {"strategy": "DataParallel", "devices": n_devices,
                                               "workers": num_processes, "global_batch": cfg.batch_size},
                "test_accuracy": metrics.get("test_accuracy"), "test_metrics": metrics,
                "train_seconds": round(train_seconds, 3), "params": int(net.count_params()),
                "keras_version": keras.__version__, "history": history}
    return net, {**training, "weights_sha256": digest, "process_id": process_id, "path": None, "manifest": None}


def _save(cfg: TrainConfig, net: Any, summary: dict[str, Any], ds: Any) -> dict[str, Any]:
    """Write the .keras file and its manifest atomically (process 0 only)."""
    from ..keras_io.files import keras_signature

    training = {k: v for k, v in summary.items() if k not in ("weights_sha256", "process_id", "path", "manifest")}
    with _atomic.atomic_path(cfg.out, cfg.force) as tmp:
        net.save(tmp)
    mpath = manifest.write(cfg.out, manifest.Manifest(format="keras", signature=keras_signature(net).to_dict(),
                                                      training=training))
    summary.update(path=cfg.out, manifest=str(mpath))
    accuracy = summary.get("test_accuracy")
    if cfg.verbose and accuracy is not None:
        print(f"test accuracy {accuracy:.4f} on {len(ds.y_test)} held-out images", file=sys.stderr, flush=True)
    return summary
