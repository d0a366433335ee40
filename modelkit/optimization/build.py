"""Build one candidate artifact of `modelkit optimize`: `modelkit convert` (or `compile` for TVM) with its
parity or accuracy gate on the user's data, into the model's work folder under the cache.

The work folder is keyed by the model's sha256, so every file in it comes from this very model. A build whose
artifact is already there, made from this model and passed its check, is reused (a rerun converts nothing);
a build that failed is remembered with its reason (keyed by the gate's settings, data and modelkit's version), so
a rerun does not pay for it again unless those changed. Failures never raise: they become the candidate's "failed"
status.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .. import _atomic
from .. import manifest as _manifest
from ..errors import InputError, ModelkitError, SourceRefusedError, first_line
from ..formats import Format, strip_suffix

CALIBRATED = "calibrated.json"  # int8 artifact name -> what it was calibrated on


def artifact_path(source: Path, build: dict[str, Any], work: Path) -> Path:
    """Where the build's artifact lands in the work folder (convert's and compile's own naming)."""
    from ..converters.planning import output_path

    if build["format"] == "tvm":
        return work / f"{strip_suffix(source.name)}.{build.get('target', 'server-cpu')}{Format.TVM.suffix}"
    return output_path(source, Format.parse(build["format"]), work, build["quantize"])


def build(source: Path, b: dict[str, Any], work: Path, gate: dict[str, Any], timeout: float | None = None,
          tune_budget: float | None = None) -> dict[str, Any]:
    """Build `b` (a plan() entry) and return it with status "built" (path, size_bytes, sha256, gate, seconds,
    cached) or "failed" (reason; an InputError, the user's data not fitting the model, is raised). `gate`:
    {"model_sha256", "data", "calibration", "max_accuracy_drop", "batch", "data_sha256"} from optimize()."""
    out = dict(b)
    dest = artifact_path(source, b, work)
    failure_key = _failure_key(b, gate)
    known = _failures(work).get(failure_key)
    if known:
        return {**out, "status": "failed", "reason": known, "cached": True}
    calibration = _calibration(b, gate)
    if _valid(dest, gate["model_sha256"]) and _json(work / CALIBRATED).get(dest.name) == calibration:
        return _built(out, dest, seconds=0.0, cached=True)
    _remove(dest)
    t0 = time.monotonic()
    try:
        if b["format"] == "tvm":
            _compile(source, dest, gate, timeout, tune_budget, b.get("target", "server-cpu"))
        else:
            _convert(source, b, work, gate, timeout)
    except (InputError, SourceRefusedError):
        raise  # the user's data does not fit the model, or no format can rebuild it: every build would fail so
    except ModelkitError as exc:
        reason = first_line(exc)
        if timeout is None or time.monotonic() - t0 < 0.9 * timeout:  # not a build the budget cut short
            _remember(work, failure_key, reason)
        return {**out, "status": "failed", "reason": reason, "cached": False}
    if calibration is not None:
        _record(work / CALIBRATED, dest.name, calibration)
    return _built(out, dest, seconds=time.monotonic() - t0, cached=False)


def _calibration(b: dict[str, Any], gate: dict[str, Any]) -> str | None:
    """What an int8 build calibrates on (the samples' sha256), so one calibrated on other samples is rebuilt."""
    if b["quantize"] != "int8":
        return None
    return _manifest.sha256_of(gate["calibration"]) if gate.get("calibration") else "the model's training split"


def check_data(artifact: Path, data: str | os.PathLike) -> str | None:
    """InputError, naming the user's file, when `data` has no array for an input of `artifact` (its manifest's
    signature) or one of the wrong shape: what convert's gate says of a fresh build, said of a reused one too.
    Labels outside the class output's classes are an InputError too (no row could be right, every drop 0).
    Returns why the labels cannot judge accuracy (a model without an output they fit: a regressor), else None."""
    from ..converters.gate import MAE, judge
    from ..converters.quantize import load_npz

    m = _manifest.read(artifact)
    if m is None or not m.signature:
        return None
    _, labels = load_npz(data, m.sig, need_labels=False)
    if labels is None:
        return None
    try:
        if judge(m.sig, labels).metric == MAE:  # integer targets of a regressor (counts): as data.prepare says
            from .data import REGRESSION_TARGETS

            return REGRESSION_TARGETS
    except InputError as exc:
        raise InputError(f"{Path(data).name}: {exc}") from exc
    except ModelkitError as exc:
        return f"{first_line(exc)} (optimize judges accuracy; the exact builds are measured)"
    return None


def _convert(source: Path, b: dict[str, Any], work: Path, gate: dict[str, Any], timeout: float | None) -> None:
    """Convert into the work folder (an OpenVINO build of a recurrent model takes the torch route by itself:
    convert retries what tf2onnx's Loop fails)."""
    from ..converters import convert

    options: dict[str, Any] = {}
    if b["quantize"]:
        options.update(quantize=b["quantize"], eval_data=gate["data"], max_accuracy_drop=gate["max_accuracy_drop"])
        if b["quantize"] == "int8" and gate.get("calibration"):
            options["calibration_data"] = gate["calibration"]
    convert(source, b["format"], out_dir=work, options=options, timeout=timeout, data=_inputs_only(gate))


def _compile(source: Path, dest: Path, gate: dict[str, Any], timeout: float | None,
             tune_budget: float | None, target: str = "server-cpu") -> None:
    from ..errors import FixedShapeError
    from ..targets import compile as tvm_compile

    t0 = time.monotonic()
    try:  # the measured batch, fixed: static shapes schedule better
        tvm_compile(source, target, out=dest, batch=gate["batch"], budget=tune_budget, timeout=timeout,
                    data=_inputs_only(gate))  # another machine's library: checked by its ELF header (compile says so)
    except FixedShapeError:
        if tune_budget:  # tuning measures fixed shapes: nothing else to try
            raise
        from .._text import progress

        # an image of any size, a sequence of any length: a dynamic-batch library keeps them open (untuned)
        progress(f"{dest.name}: an open non-batch dimension: compiling with a dynamic batch instead")
        left = None if timeout is None else max(1.0, timeout - (time.monotonic() - t0))
        tvm_compile(source, target, out=dest, dynamic_batch=True, timeout=left, data=_inputs_only(gate), force=True)


def _inputs_only(gate: dict[str, Any]) -> str | None:
    """The exact hops' parity runs on the user's inputs (the eval file: its `y` is ignored there)."""
    return gate.get("data")


def _built(out: dict[str, Any], dest: Path, seconds: float, cached: bool) -> dict[str, Any]:
    m = _manifest.read(dest)
    gate = None
    if m is not None:
        gate = {"parity_ok": (m.parity or {}).get("ok"), "quantization": m.quantization,
                "accuracy": (m.extra or {}).get("accuracy") or (m.parity or {}).get("accuracy")}
    return {**out, "status": "built", "reason": None, "path": str(dest), "size_bytes": _manifest.size_of(dest),
            "sha256": m.sha256 if m and m.sha256 else _manifest.sha256_of(dest), "gate": gate,
            "build_seconds": round(seconds, 2), "cached": cached}


def _valid(dest: Path, model_sha256: str) -> bool:
    """Whether an artifact already in the work folder can be reused: made from this model, passed its check (a
    library for another machine: its ELF check), unchanged since (its sha256 is the manifest's)."""
    if not dest.exists():
        return False
    try:
        m = _manifest.read(dest)
    except ModelkitError:
        return False
    if m is None or (m.source or {}).get("sha256") != model_sha256 and not _chained_from(m, model_sha256):
        return False
    if not (m.parity or {}).get("ok") and (m.extra or {}).get("verified") != "elf-architecture-only":
        return False
    return not m.sha256 or _manifest.sha256_of(dest) == m.sha256


def _chained_from(m: Any, model_sha256: str) -> bool:
    """A TVM library's source is the ONNX file on the way; that file's manifest names the model."""
    src = (m.source or {}).get("path")
    if not src or not Path(src).exists():
        return False
    try:
        up = _manifest.read(src)
    except ModelkitError:
        return False
    return up is not None and (up.source or {}).get("sha256") == model_sha256


def _remove(dest: Path) -> None:
    """A stale artifact of this build (an earlier run's, not reusable) goes, with its manifest."""
    _atomic.remove_path(dest)
    _atomic.remove_path(_manifest.manifest_path(dest))


def _failure_key(b: dict[str, Any], gate: dict[str, Any]) -> str:
    """What a remembered failure depends on: the build, the data, the gate's limit, TVM's batch and target, the
    user's modules (--import / MODELKIT_IMPORTS: naming one can make a failed build work) and modelkit's version
    (a new modelkit may build it)."""
    from .. import _version
    from ..keras_io.custom import env_imports

    lossy = b["quantize"] is not None
    target = b.get("target", "server-cpu")  # a TVM library is built for its target: another one's failure is not its
    return json.dumps([b["build"], gate.get("data_sha256"), gate["max_accuracy_drop"] if lossy else None,
                       gate["batch"] if b["format"] == "tvm" else None, sorted(env_imports()),
                       *([_calibration(b, gate)] if b["quantize"] == "int8" else []),
                       *([target] if b["format"] == "tvm" and target != "server-cpu" else []),
                       _version.__version__])


def _failures(work: Path) -> dict[str, str]:
    return _json(work / "failed.json")


def _remember(work: Path, key: str, reason: str) -> None:
    _record(work / "failed.json", key, reason)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record(path: Path, key: str, value: Any) -> None:
    known = _json(path)
    known[key] = value
    _atomic.write_text(path, json.dumps(known, indent=1))
