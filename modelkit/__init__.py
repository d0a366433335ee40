"""modelkit: one toolchain to convert, verify, compile, run and serve Keras models.

The public API is light to import: heavy engines load only when a function needs them.
"""
from __future__ import annotations

import os
from typing import Any

from . import errors
from ._progress import verbosity
from ._version import __version__  # its own module: serving names it without importing this root
from .errors import ModelkitError
from .formats import Format, detect
from .spec import Signature, TensorSpec

__all__ = ["load", "convert", "compile", "verify", "optimize", "detect", "Format", "Signature", "TensorSpec",
           "ModelkitError", "errors", "__version__"]


def _use(imports: Any) -> None:
    """`imports=[...]`: the user's modules that register custom Keras objects, for this process and its children
    (the modules that registered them in this process are passed on without it)."""
    if imports:
        from .keras_io.custom import use_imports

        use_imports([imports] if isinstance(imports, str) else list(imports))


def load(path: Any, device: str = "cpu", threads: int | None = None, imports: Any = None,
         format: str | None = None, trust_unsafe_code: bool = False, verbose: bool = True,  # noqa: A002
         **options: Any) -> Any:
    """Load any artifact (.keras, ONNX, SavedModel, TFLite, TorchScript, .pt2, TVM library) as a runtime Model.

    `device` "cpu" or "cuda[:N]" (never a silent fallback), `threads` the engine's intra-op threads,
    `format` skips detection, `trust_unsafe_code` lifts the code checks for your own files, `imports` names
    modules that register custom layers, `verbose=False` silences progress lines (as `modelkit -q`). The Model
    has `.signature` (named inputs and outputs) and `.predict(inputs)`, which takes a dict keyed by input name
    (or one array for a one-input model) and always returns a dict of numpy arrays keyed by output name.
    Details: modelkit.runtime.load.

    Example:
        model = modelkit.load("cnn.onnx")
        probs = model.predict({"image": x})["probs"]
    """
    from .runtime import load as _load

    _use(imports)
    if trust_unsafe_code:
        options["trust_unsafe_code"] = True
    with verbosity(verbose):
        return _load(path, device=device, threads=threads, format=format, **options)


def convert(source: Any, to: Any, out_dir: Any = None, force: bool = False, verify: bool = True,
            atol: float | None = None, quantize: str | None = None, calibration_data: Any = None,
            eval_data: Any = None, max_accuracy_drop: float | None = None, opset: int | None = None,
            data: Any = None, input_spec: Any = None, route: str | None = None, trust_unsafe_code: bool = False,
            timeout: float | None = None, imports: Any = None, options: dict[str, Any] | None = None,
            verbose: bool = True, max_batch: int | None = None, max_length: int | None = None) -> list[Any]:
    """Convert a model to one or more formats, verifying each hop; one ConversionResult per artifact.

    The parameters are the `modelkit convert` flags: `to` ("onnx", "tflite,onnx" or "all"), `out_dir`
    (default: beside the source), `force`, `verify`, `atol`, `quantize` ("fp16", "dynamic-int8", "int8") with
    `calibration_data`, `eval_data` (.npz) and `max_accuracy_drop`, `opset`, `data` (.npz to verify on),
    `input_spec` (["x:?,8:float32"] for a subclassed model), `route` ("torch"), `max_batch` (executorch: the
    largest batch its program plans memory for, 7..4096, default 64), `max_length` (executorch: the largest size of
    its other open dimensions, a sequence length, 16..65536, default 128 or the longest size under it the model
    runs at), `imports` (modules that register custom layers). With several formats, one that fails does not
    stop the others: the error raised at the end names each failed format and carries `.results`, the artifacts
    written. Details: modelkit.converters.convert. `verbose=False` silences the progress (the per-hop lines on
    stderr, and on a terminal the bar over several hops) for this call and its child processes, as `modelkit -q`
    does.

    Example:
        results = modelkit.convert("cnn.keras", "tflite", quantize="int8", max_accuracy_drop=0.01)
        print(results[0].path, results[0].parity["ok"])
    """
    from .converters import convert as _convert

    _use(imports)
    if max_batch is not None or max_length is not None:  # checked here, before any child starts
        from .converters.keras_executorch import check_max_batch, check_max_length

        max_batch = None if max_batch is None else check_max_batch(max_batch)
        max_length = None if max_length is None else check_max_length(max_length)
    opts = dict(options or {})
    given = {"quantize": quantize, "calibration_data": calibration_data, "eval_data": eval_data,
             "max_accuracy_drop": max_accuracy_drop, "opset": opset, "route": route, "max_batch": max_batch,
             "max_length": max_length}
    opts.update({k: v for k, v in given.items() if v is not None})
    with verbosity(verbose):
        return _convert(source, to, out_dir=out_dir, force=force, verify=verify, options=opts,
                        trust_unsafe_code=trust_unsafe_code, atol=atol, timeout=timeout, data=data,
                        input_spec=input_spec)


def compile(model: Any, target: Any = "server-cpu", out: Any = None, batch: int | None = None,  # noqa: A001
            dynamic_batch: bool = False, trials: int | None = None, budget: str | float | None = None,
            force: bool = False, verify: bool | None = None, cache_dir: Any = None, timeout: float | None = None,
            data: Any = None, imports: Any = None, verbose: bool = True, rpc: str | None = None,
            device_key: str | None = None) -> Any:
    """Compile a .keras or ONNX model with TVM for a named target; returns a CompileResult (`.path`, `.parity`).

    The parameters are the `modelkit compile` flags: `target` (a name from `modelkit targets`, e.g.
    "server-cpu", "edge-arm64"), `out` (a .tvm.so name or a folder), `batch` (fix the batch) or
    `dynamic_batch`, `trials` / `budget` ("10m", seconds) to tune with MetaSchedule (the database is cached
    and reused), `force`, `verify` (default: True where the library runs here), `cache_dir`, `timeout`,
    `data` (.npz to verify on), `imports` (modules that register custom layers), `rpc` ("HOST:PORT" of a
    TVM RPC tracker) and `device_key` to measure the tuning candidates on the device registered there.
    `verbose=False` silences the progress (compile and tuning lines, the tuning bar on a terminal) for this
    call and its child processes, as `modelkit -q` does. Details: modelkit.targets.compile.

    Example:
        result = modelkit.compile("cnn.onnx", "server-cpu", budget="5m")
        print(result.path, result.parity["ok"])
    """
    from .targets import compile as _compile

    _use(imports)
    with verbosity(verbose):
        return _compile(model, target, out=out, batch=batch, dynamic_batch=dynamic_batch, trials=trials,
                        budget=budget, force=force, verify=verify, cache_dir=cache_dir, timeout=timeout, data=data,
                        rpc=rpc, device_key=device_key)


def verify(a: Any, b: Any, atol: float | None = None, batch_sizes: tuple[int, ...] = (1, 7), seed: int = 0,
           data: Any = None, raise_on_failure: bool = True, trust_unsafe_code: bool = False, imports: Any = None,
           verbose: bool = True) -> Any:
    """Compare artifact `b` with the reference `a` on the same inputs; returns a ParityReport (`.ok`, `.outputs`).

    The parameters are the `modelkit verify` flags: `atol` (default: the registered edge's tolerance),
    `batch_sizes`, `seed`, `data` (a .npz / .npy path, or a dict of arrays keyed by input name, to verify
    on; default: the data set a's manifest names, else ranges inferred from the model), `trust_unsafe_code`,
    `imports` (modules that register custom layers). A failed comparison raises ParityError unless
    `raise_on_failure=False`. `verbose=False` silences progress lines, as `modelkit -q` does. Details:
    modelkit.converters.verify.verify_artifacts.

    Example:
        report = modelkit.verify("cnn.keras", "cnn.tflite", data="samples.npz")
        print(report.ok, max(o.max_abs for o in report.outputs))
    """
    from .converters.verify import verify_artifacts

    _use(imports)
    label = None
    if isinstance(data, (str, os.PathLike)):  # a file, as the CLI's --data takes it
        from .input_files import read_inputs

        label, data = os.path.basename(os.fspath(data)), read_inputs(data)
        data = data if isinstance(data, dict) else {"x": data}
    with verbosity(verbose):
        return verify_artifacts(a, b, atol=atol, batch_sizes=tuple(batch_sizes), seed=seed, data=data,
                                raise_on_failure=raise_on_failure, data_label=label,
                                trust_unsafe_code=trust_unsafe_code)


def optimize(model: Any, target: str = "server-cpu", data: Any = None, max_accuracy_drop: float = 0.01,
             max_p99_ms: float | None = None, max_size_mb: float | None = None, batch: int = 1,
             budget: str | float | None = None, out: Any = None, package: str | None = None,
             formats: Any = None, precisions: Any = None, threads: Any = None, calibration_data: Any = None,
             rounds: int = 5, force: bool = False, cache_dir: Any = None, imports: Any = None,
             verbose: bool = True) -> Any:
    """The fastest artifact of a .keras model for a target that meets the limits, chosen by measurement.

    The parameters are the `modelkit optimize` flags: `target` ("server-cpu"), `data` (.npz of real inputs with
    'y' labels: parity and the accuracy gate run on it; lossy precisions are tried only with labels),
    `max_accuracy_drop`, `max_p99_ms`, `max_size_mb`, `batch`, `budget` ("15m": the whole search), `out` (the
    folder for the winner, default MODEL_optimized beside it), `package` ("triton", "kserve", "torchserve",
    "tf-serving"), `formats` / `precisions` / `threads` (narrow the candidates), `calibration_data`, `rounds`
    (interleaved measuring rounds), `force`, `cache_dir`. Returns an OptimizeResult (`.path` of the winner,
    `.winner`, `.decision`, `.candidates`, `.report`); raises OptimizeError listing the closest candidates when
    none meets the limits. Details: modelkit.optimization.optimize.

    Example:
        result = modelkit.optimize("cnn.keras", data="test.npz", max_p99_ms=2.0, budget="5m")
        print(result.path, result.decision["why"])
    """
    from .optimization import optimize as _optimize

    _use(imports)
    with verbosity(verbose):
        return _optimize(model, target=target, data=data, max_accuracy_drop=max_accuracy_drop,
                         max_p99_ms=max_p99_ms, max_size_mb=max_size_mb, batch=batch, budget=budget, out=out,
                         package=package, formats=_listed(formats), precisions=_listed(precisions),
                         threads=_listed(threads), calibration_data=calibration_data, rounds=rounds, force=force,
                         cache_dir=cache_dir)


def _listed(value: Any) -> tuple[Any, ...] | None:
    """"onnx,tflite" or ["onnx", "tflite"] -> ("onnx", "tflite"); None stays None. A string is split as convert's
    `to` is (converters.planning.listed_names: empty items dropped, as the CLI's --formats / --threads are)."""
    if value is None:
        return None
    if isinstance(value, str):
        from .converters.planning import listed_names

        return tuple(listed_names(value))
    return tuple(value)
