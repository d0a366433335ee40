"""Conversion coverage: the matrix model x format x backend, each cell ok / typed refusal / failure.

    python benchmarks/coverage.py [--quick] [--json coverage.json] [--out bench-out/coverage]
                                  [--models a,b] [--backends tensorflow,torch,jax] [--formats onnx,...]
                                  [--cell-timeout 900] [--resume [--retry-failed]]

The models (benchmarks/coverage_zoo.py, none used by the tests: CNNs, MLPs, sequence models with dynamic
lengths, attention blocks, masked RNNs, preprocessing layers, multi-input/multi-output, subclassed models,
registered custom layers, keras.applications) are built and saved under each Keras backend, in one child
process per backend, with reference predictions made there by the model itself on inputs in its own range.
Then every cell, in its own child process bounded by --cell-timeout, converts the .keras file to one
format with `modelkit.convert` (verified, as users run it), loads the artifact with `modelkit.load` and
compares its predictions with the source's at atol 1e-3 (a library compiled for a fixed batch gets the probe
in slices of that batch). A cell is `ok`, `refused` (a typed
UnsupportedConversionError, the refusal users get) or `FAIL` (any other error, a timeout, a crash, or
predictions that differ from the source's). Prints the table, the percentages (overall, per kind,
backend and format) and every failing cell with its error; --json writes the cells and the summary
(and is rewritten after each cell, so --resume continues an interrupted run). The full run (19 models x
3 backends x 6 formats) takes about 3 hours on 2 shared cores; --quick (2 models, TensorFlow, onnx and
pt2) about 2 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORMATS = ("onnx", "saved_model", "tflite", "torchscript", "pt2", "tvm")
BACKENDS = ("tensorflow", "torch", "jax")
QUICK = {"models": ("mlp", "masked_lstm"), "backends": ("tensorflow",), "formats": ("onnx", "pt2")}
ATOL = 1e-3  # artifact vs the source's own predictions (the source may run under another framework)
ZOO = "benchmarks.coverage_zoo"  # registers the custom classes; every converting child imports it


@dataclass
class Cell:
    model: str
    kind: str
    backend: str
    format: str
    status: str  # "ok" | "refused" | "fail"
    error: str | None = None  # the error's class name
    message: str | None = None
    seconds: float = 0.0
    max_abs: float | None = None  # worst abs difference from the source's predictions

    @property
    def key(self) -> tuple[str, str, str]:
        return self.model, self.backend, self.format


# ------------------------------------------------------------------------------------------ child side

def build_models(models: list[str], out_dir: str, seed: int = 0) -> dict[str, dict[str, Any]]:
    """In a child under one backend: build, calibrate and save each model, and store its reference
    predictions on inputs in its own range (`NAME.probe.npz`: in/<input>, out/<output>). A model that
    fails to build is reported ({"error": ...}), the others still build."""
    import keras
    import numpy as np

    from benchmarks import coverage_zoo as zoo
    from modelkit.keras_io.files import keras_signature, load_keras

    out: dict[str, dict[str, Any]] = {}
    for name in models:
        spec = zoo.SPECS[name]
        path = Path(out_dir) / f"{name}.keras"
        try:
            keras.utils.clear_session()
            keras.utils.set_random_seed(seed)
            model = spec.build(keras, seed)
            zoo.calibrate(model, [zoo.native(spec, zoo.probe(spec, 16, seed + k)) for k in range(3)])
            model.save(path)
            feed = zoo.probe(spec, 5, seed + 100)
            flat = keras.tree.flatten(model(zoo.native(spec, feed), training=False))
            sig = keras_signature(load_keras(path))
            if len(sig.inputs) != len(spec.inputs) or len(sig.outputs) != len(flat):
                raise ValueError(f"the saved model's signature {sig} does not fit the spec")
            arrays = {f"in/{s.name}": feed[i.name] for s, i in zip(sig.inputs, spec.inputs)}  # by position
            arrays.update({f"out/{n}": np.asarray(keras.ops.convert_to_numpy(o)) for n, o in zip(sig.output_names,
                                                                                                    flat)})
            np.savez(path.with_suffix(".probe.npz"), **arrays)
            out[name] = {"path": str(path)}
        except Exception as exc:  # noqa: BLE001 - any builder failure is this model's, recorded
            out[name] = {"error": type(exc).__name__, "message": _first_line(exc)}
    return out


def cell(src: str, fmt: str, out_dir: str, timeout: float, atol: float = ATOL) -> dict[str, Any]:
    """In a child: convert `src` to `fmt` with modelkit.convert, load the artifact with modelkit.load and
    compare it with the reference predictions stored beside `src`; a dict of Cell's result fields."""
    import numpy as np

    import modelkit
    from modelkit.errors import ModelkitError, UnsupportedConversionError

    t0 = time.perf_counter()
    try:
        results = modelkit.convert(src, fmt, out_dir=out_dir, force=True, timeout=timeout)
        path = next(r.path for r in results if r.format == fmt)
        probe = np.load(Path(src).with_suffix(".probe.npz"))
        feed = {k[3:]: probe[k] for k in probe.files if k.startswith("in/")}
        got = _predict(modelkit.load(path), feed)
        worst, where = 0.0, ""
        for key in (k for k in probe.files if k.startswith("out/")):
            want, have = probe[key], np.asarray(got[key[4:]])
            diff = float("inf") if want.shape != have.shape else float(np.max(np.abs(want - have), initial=0.0))
            if not diff <= worst:
                worst, where = diff, key[4:]
        status = "ok" if worst <= atol else "fail"
        message = None if status == "ok" else (f"the artifact differs from the source's own predictions by "
                                               f"{worst:.2e} > {atol:.0e} on '{where}'")
        return {"status": status, "error": None if status == "ok" else "SourceMismatch", "message": message,
                "max_abs": worst, "seconds": time.perf_counter() - t0}
    except UnsupportedConversionError as exc:
        return {"status": "refused", "error": type(exc).__name__, "message": str(exc),
                "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - every other error is a failing cell, typed or not
        typed = isinstance(exc, ModelkitError)
        return {"status": "fail", "error": type(exc).__name__ + ("" if typed else " (untyped)"),
                "message": str(exc), "seconds": time.perf_counter() - t0}


def _predict(model: Any, feed: dict[str, Any]) -> dict[str, Any]:
    """The artifact's predictions on the probe; a library compiled for a fixed batch (TVM at batch 1, which
    its signature says and its engine enforces) is fed the probe in slices of that batch."""
    import numpy as np

    fixed = model.signature.inputs[0].shape[0] if model.signature.inputs[0].shape else None
    n = len(next(iter(feed.values())))
    if not fixed or fixed == n or n % fixed:
        return model.predict(feed)
    parts = [model.predict({k: v[i:i + fixed] for k, v in feed.items()}) for i in range(0, n, fixed)]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


# ------------------------------------------------------------------------------------------ parent side

def run_matrix(models: list[str], backends: list[str], formats: list[str], out: Path, cell_timeout: float = 900,
               json_path: Path | None = None, resume: bool = False, retry_failed: bool = False,
               log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> list[Cell]:
    """Build every model under every backend, then run every cell; the cells, in matrix order. With
    `resume`, cells already in `json_path` are kept (failed ones run again with `retry_failed`)."""
    from benchmarks.coverage_zoo import SPECS
    from modelkit import _child
    from modelkit.errors import ModelkitError

    os.environ["MODELKIT_IMPORTS"] = ",".join(p for p in (os.environ.get("MODELKIT_IMPORTS"), ZOO) if p)
    done = {c.key: c for c in _read_cells(json_path) if not (retry_failed and c.status == "fail")} \
        if resume and json_path else {}
    cells: list[Cell] = []
    for backend in backends:
        folder = out / backend
        folder.mkdir(parents=True, exist_ok=True)
        todo = [m for m in models if any((m, backend, f) not in done for f in formats)]
        built: dict[str, dict[str, Any]] = {}
        if todo:
            log(f"building {len(todo)} models under {backend} ...")
            try:
                built = _child.run("benchmarks.coverage:build_models", {"models": todo, "out_dir": str(folder)},
                                   backend=backend, timeout=max(cell_timeout, 1800), quiet=True)
            except ModelkitError as exc:
                built = {m: {"error": type(exc).__name__, "message": _first_line(exc)} for m in todo}
        for model in models:
            for fmt in formats:
                key = (model, backend, fmt)
                if key in done:
                    cells.append(done[key])
                    continue
                info = built.get(model, {})
                base = {"model": model, "kind": SPECS[model].kind, "backend": backend, "format": fmt}
                if "error" in info:
                    c = Cell(**base, status="fail", error=info["error"], message=f"build: {info['message']}")
                else:
                    c = Cell(**base, **_run_cell(info["path"], fmt, folder / f"{model}_artifacts", cell_timeout))
                cells.append(c)
                log(f"{model:<22} {backend:<10} {fmt:<11} {c.status:<7} {c.seconds:6.1f} s"
                    + (f"  {c.error}: {_first_line(c.message or '')[:150]}" if c.status != "ok" else ""))
                if json_path:  # after every cell: an interrupted run keeps what it measured (--resume)
                    write_json(json_path, cells + [v for k, v in done.items() if k not in _keys(cells)])
    return cells


def _keys(cells: list[Cell]) -> set[tuple[str, str, str]]:
    return {c.key for c in cells}


def _run_cell(src: str, fmt: str, out_dir: Path, timeout: float) -> dict[str, Any]:
    from modelkit import _child
    from modelkit.errors import ModelkitError

    t0 = time.perf_counter()
    try:
        return _child.run("benchmarks.coverage:cell", {"src": src, "fmt": fmt, "out_dir": str(out_dir),
                                                       "timeout": timeout}, timeout=timeout + 60, quiet=True)
    except ModelkitError as exc:  # the cell's child timed out or died (a crash in an engine)
        return {"status": "fail", "error": type(exc).__name__, "message": str(exc),
                "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------ reporting

def summarize(cells: list[Cell]) -> dict[str, Any]:
    """Counts and percentages: overall, and per kind, backend and format."""
    def stats(group: list[Cell]) -> dict[str, Any]:
        n = len(group)
        ok = sum(c.status == "ok" for c in group)
        refused = sum(c.status == "refused" for c in group)
        return {"cells": n, "ok": ok, "refused": refused, "fail": n - ok - refused,
                "ok_pct": round(100 * ok / n, 1) if n else None,
                "ok_or_refused_pct": round(100 * (ok + refused) / n, 1) if n else None}

    out: dict[str, Any] = {"overall": stats(cells)}
    for field in ("kind", "backend", "format"):
        values = list(dict.fromkeys(getattr(c, field) for c in cells))
        out[f"by_{field}"] = {v: stats([c for c in cells if getattr(c, field) == v]) for v in values}
    return out


def render(cells: list[Cell]) -> str:
    """The matrix (a row per model and backend), the percentages and the failing cells, as text."""
    formats = list(dict.fromkeys(c.format for c in cells))
    rows = list(dict.fromkeys((c.model, c.backend) for c in cells))
    by = {c.key: c for c in cells}
    mark = {"ok": "ok", "refused": "refused", "fail": "FAIL"}
    lines = ["| model | backend | " + " | ".join(formats) + " |", "|---|---|" + "---|" * len(formats)]
    for model, backend in rows:
        marks = [mark[by[(model, backend, f)].status] if (model, backend, f) in by else "" for f in formats]
        lines.append(f"| {model} | {backend} | " + " | ".join(marks) + " |")
    s = summarize(cells)
    o = s["overall"]
    lines += ["", f"{o['cells']} cells: ok {o['ok']} ({o['ok_pct']}%), typed refusal {o['refused']}, "
                  f"failed {o['fail']}; ok or typed refusal {o['ok_or_refused_pct']}%", "",
              "| by | value | cells | ok % | ok or refused % |", "|---|---|---|---|---|"]
    for field in ("kind", "backend", "format"):
        for value, st in s[f"by_{field}"].items():
            lines.append(f"| {field} | {value} | {st['cells']} | {st['ok_pct']} | {st['ok_or_refused_pct']} |")
    failing = [c for c in cells if c.status == "fail"]
    if failing:
        lines += ["", "failing cells:"]
        lines += [f"- {c.model} / {c.backend} / {c.format}: {c.error}: {_first_line(c.message or '')[:400]}"
                  for c in failing]
    return "\n".join(lines)


def write_json(path: Path, cells: list[Cell]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"atol": ATOL, "cells": [asdict(c) for c in cells], "summary": summarize(cells)},
                              indent=1))
    tmp.replace(path)


def _read_cells(path: Path | None) -> list[Cell]:
    if path is None or not path.is_file():
        return []
    return [Cell(**c) for c in json.loads(path.read_text()).get("cells", [])]


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    from modelkit._backend import quiet_engines

    quiet_engines()  # before the zoo imports Keras, as in the CLI
    from benchmarks.coverage_zoo import SPECS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.environ.get("BENCH_OUT", "bench-out"), "coverage"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help=f"a smoke check: {QUICK}")
    ap.add_argument("--models", default=None, help=f"comma-separated, of: {', '.join(SPECS)}")
    ap.add_argument("--backends", default=None)
    ap.add_argument("--formats", default=None)
    ap.add_argument("--cell-timeout", type=float, default=900.0, help="seconds per cell (default 900)")
    ap.add_argument("--resume", action="store_true", help="keep the cells already in --json")
    ap.add_argument("--retry-failed", action="store_true", help="with --resume: run the failed cells again")
    args = ap.parse_args(argv)
    pick = lambda given, full, quick: (given.split(",") if given else list(QUICK[quick] if args.quick else full))  # noqa: E731
    models = pick(args.models, SPECS, "models")
    unknown = [m for m in models if m not in SPECS]
    if unknown:
        ap.error(f"unknown models {unknown}; known: {', '.join(SPECS)}")
    t0 = time.perf_counter()
    cells = run_matrix(models, pick(args.backends, BACKENDS, "backends"), pick(args.formats, FORMATS, "formats"),
                       Path(args.out), args.cell_timeout, args.json, args.resume, args.retry_failed)
    print(render(cells))
    print(f"\n{len(cells)} cells in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
