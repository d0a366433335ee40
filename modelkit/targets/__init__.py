"""Targets: named deployment targets and `compile(model, target=...)`, which builds a TVM library.

compile() takes ONNX, or any format the converter planner turns into ONNX (.keras first goes through
modelkit.convert), then runs the onnx -> tvm edge as a verified hop in a child process: the library
(`.tvm.so`) and its manifest appear atomically, with the parity report against the ONNX source. Libraries
for another machine (arm64, armv7, CUDA) cannot run here: they are checked by their ELF header only,
and the manifest says so (extra.verified = "elf-architecture-only").
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .. import _atomic, _child
from .. import manifest as _manifest
from ..errors import ConversionError, OutputPathError, UnsupportedConversionError
from ..formats import Format, detect
from . import registry
from .registry import Target, get, names, targets

__all__ = ["compile", "CompileResult", "Target", "get", "names", "targets", "DEFAULT_TRIALS"]

DEFAULT_TRIALS = 64  # `--tune` without --trials or --budget
TUNING_STOP_GRACE_S = 120.0  # Ctrl-C while tuning: time for the batch in flight to finish and be recorded


@dataclass
class CompileResult:
    path: str
    onnx: str
    target: str
    batch: int | None
    seconds: float
    size_bytes: int | None
    parity: dict[str, Any] | None
    verified: str
    tuning: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_output(onnx_path: Path, target: Target, out: str | os.PathLike | None) -> Path:
    """`cnn.onnx` + server-cpu -> `cnn.server-cpu.tvm.so` beside it. --out names the library when it ends with
    .tvm.so, else a folder (created when missing, as `convert --out` does) that gets the default name."""
    stem = onnx_path.name[: -len(".onnx")] if onnx_path.name.endswith(".onnx") else onnx_path.stem
    name = f"{stem}.{target.name}{Format.TVM.suffix}"
    if out is None:
        return onnx_path.with_name(name)
    return Path(out) if _names_library(out) else Path(out) / name


def check_out(out: str | os.PathLike | None) -> None:
    """A library name without .tvm.so (`--out cnn.so`) would become a folder named cnn.so holding the library:
    refused before any work, naming the path to use."""
    if out is None or _names_library(out) or Path(out).is_dir():
        return
    name = Path(out).name
    if Path(name).suffix.lower() in (".so", ".dylib", ".dll"):
        fixed = Path(out).with_name(name[: -len(Path(name).suffix)] + Format.TVM.suffix)
        raise OutputPathError(f"--out {out}: a TVM library's name ends with {Format.TVM.suffix} (how modelkit "
                              f"recognises it when loading); pass --out {fixed}, or a folder for it")


def _names_library(out: str | os.PathLike) -> bool:
    """Whether --out names the library itself (ends with .tvm.so and is not a folder), not a folder for it."""
    return Path(out).name.endswith(Format.TVM.suffix) and not Path(out).is_dir()


def compile(model: str | os.PathLike, target: str | dict[str, Any] = "server-cpu",  # noqa: A001
            out: str | os.PathLike | None = None, batch: int | None = None, dynamic_batch: bool = False,
            trials: int | None = None, budget: str | float | None = None, force: bool = False,
            verify: bool | None = None, cache_dir: str | os.PathLike | None = None,
            timeout: float | None = None, data: str | os.PathLike | None = None, rpc: str | None = None,
            device_key: str | None = None, input_spec: Iterable[str] | str | None = None) -> CompileResult:
    """Compile a model into a TVM library for `target` (a name from `modelkit targets`, or a TVM target dict).

    batch fixes the batch size; dynamic_batch keeps it dynamic (the default where the target allows it and
    nothing is tuned). trials / budget ('10m', seconds) tune with MetaSchedule, caching the tuning database
    per model and target, so a second compile reuses it without tuning. verify defaults to True for targets
    that run here and cannot be True for the others. data: a .npz of samples to verify on (see convert()).
    rpc ('HOST:PORT' of a TVM RPC tracker) and device_key measure the tuning candidates on the device
    registered there under that key (cross targets too); the tracker is checked before any work.
    input_spec fixes open dimensions, e.g. ["tokens:?,64:int32"] for a sequence length TVM's importer cannot keep
    open: a .keras source's on its way to ONNX (see convert()), an ONNX source's in its graph (its dtypes kept).
    """
    from .tvm import tuning
    from .tvm.compile import check_toolchain, choose_batch, remote_device

    tgt = registry.get(target)
    check_out(out)
    check_toolchain(tgt)  # fail fast: no conversion work when the compiler is missing
    budget_s = tuning.parse_budget(budget)
    tuned = bool(trials) or budget_s is not None
    if dynamic_batch and (batch is not None or tuned):
        raise ConversionError("--dynamic-batch cannot be combined with --batch or tuning (tuning measures a "
                              "fixed batch)")
    if dynamic_batch and not tgt.dynamic_batch:
        raise ConversionError(f"target '{tgt.name}' needs a fixed batch; drop --dynamic-batch or pass --batch N")
    device = remote_device(tgt, rpc, device_key, tuned)
    if device is not None:
        from .tvm import rpc as _rpc

        _rpc.check(device)  # fail fast: no conversion work when the tracker or the device is not there
    elif tuned and tgt.cross:
        raise UnsupportedConversionError(f"tuning measures candidates on this machine; '{tgt.name}' runs on "
                                         f"{tgt.arch}/{tgt.device}, not here (compile it untuned, or tune on "
                                         "the device over TVM RPC: --rpc HOST:PORT --device-key KEY)")
    fixed = choose_batch(tgt, batch, tuned)
    if verify and tgt.cross:
        raise ConversionError(f"a library for {tgt.name} ({tgt.arch}/{tgt.device}) cannot run on this machine, "
                              "so it cannot be verified here; compile without --verify")
    verify = (not tgt.cross) if verify is None else verify
    src = Path(model)
    samples = str(Path(data).resolve()) if data is not None else None
    specs = _spec_dicts(input_spec)
    onnx_path = _as_onnx(src, Path(out).parent if out and _names_library(out) else out, force, samples, specs)
    dest = default_output(onnx_path, tgt, out)
    _atomic.check_writable(dest, force)
    options = {"target": tgt.tvm if tgt.name == "custom" else tgt.name, "batch": fixed,
               "trials": int(trials) if trials else None, "budget": budget_s,
               "cache_dir": str(cache_dir) if cache_dir else None,
               "input_spec": specs if onnx_path == src else None,  # a .keras source's ONNX already has them
               **({"rpc": rpc, "device_key": device_key} if device is not None else {})}
    hop = {"src": str(onnx_path), "dest": str(dest), "source": "onnx", "target": "tvm", "options": options,
           "verify": verify, "force": force, **({"data": samples} if samples else {})}
    grace = {"interrupt_grace": TUNING_STOP_GRACE_S} if tuned else {}
    (r,) = _child.run("modelkit.converters.hop:run_hops", {"hops": [hop]}, backend=None, timeout=timeout,
                      error=ConversionError, what="the TVM compile", **grace)
    if "error" in r:  # a SourceRouteError (tf2onnx's Loop): convert retries it by the other route, compile cannot
        err = r["error"]
        advice = (f"; compile takes the ONNX as it is: export it by torch.onnx first (modelkit convert {src.name} "
                  f"--to onnx --route torch --out DIR), then compile DIR/{onnx_path.name}") if src != onnx_path else ""
        raise _child.rebuild({**err, "message": err["message"].split(": convert again with")[0] + advice},
                             ConversionError)
    m = _manifest.read(dest)
    extra = (m.extra if m else None) or {}
    batch = extra.get("batch", fixed)  # compile may fall back to batch 1 (a graph TVM cannot keep dynamic)
    return CompileResult(path=r["path"], onnx=str(onnx_path), target=tgt.name, batch=batch, seconds=r["seconds"],
                         size_bytes=r["size_bytes"], parity=r["parity"] or extra.get("emulated_parity"),
                         verified=extra.get("verified", "parity" if verify else "not verified"),
                         tuning=extra.get("tuning"))


def _as_onnx(src: Path, out_dir: str | os.PathLike | None, force: bool, data: str | None = None,
             input_spec: list[dict[str, Any]] | None = None) -> Path:
    """The ONNX model to compile: src itself, an up-to-date conversion of it (with the same input spec), or a
    new verified conversion."""
    fmt = detect(src)
    if fmt == Format.ONNX:
        return src  # an input spec fixes its open dimensions in the compile itself (tvm/fix_dims.py)
    from ..converters import convert, output_path

    folder = Path(out_dir) if out_dir else src.parent
    existing = output_path(src, Format.ONNX, folder)
    m = _manifest.read(existing) if existing.is_file() else None
    if m and (m.source or {}).get("sha256") == _manifest.sha256_of(src) and m.parity and m.parity.get("ok"):
        before = (m.extra or {}).get("input_spec")
        if before == input_spec:
            return existing  # converted from exactly these bytes, with these inputs, and verified
        if not force:  # convert's own refusal ("exists; pass --force") would not say why a new ONNX is needed
            raise ConversionError(f"{existing.name} was converted from {src.name} with {_spec_text(before)}, this "
                                  f"compile asks for {_spec_text(input_spec)}; pass --force to convert it again "
                                  "(replacing it), or --out DIR to keep it and write the new ONNX there")
    results = convert(src, Format.ONNX.value, out_dir=folder, force=force, data=data, input_spec=input_spec)
    return Path(next(r.path for r in results if r.format == Format.ONNX.value))


def _spec_text(specs: list[dict[str, Any]] | None) -> str:
    """[{'name': 'tokens', 'shape': [None, 8], 'dtype': 'int32'}] -> "--input-spec tokens:?,8:int32"."""
    if not specs:
        return "its own inputs (no --input-spec)"
    from ..keras_io.inputs import input_spec_text
    from ..spec import TensorSpec

    return "--input-spec " + " ".join(input_spec_text(TensorSpec.from_dict(d)) for d in specs)


def _spec_dicts(input_spec: Iterable[str] | str | None) -> list[dict[str, Any]] | None:
    """`--input-spec` values parsed (a typed error for a bad one, before any work), as the manifest records them."""
    if not input_spec:
        return None
    from ..keras_io.inputs import parse_input_specs

    return [s.to_dict() for s in parse_input_specs(input_spec)] or None
