"""Quantization shared by the lossy edges (keras -> tflite, keras -> onnx, onnx -> openvino): mode names, calibration
samples, the labelled data of the accuracy gate (modelkit.converters.gate) and ONNX quantization.

Labelled data is the test split of the data set the source was trained on (from its manifest) or a user .npz.
Calibration samples come from the *training* split, never the split used to judge accuracy.
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConversionError, InputError, ModelkitError, UnsupportedConversionError
from ..formats import Format
from ..spec import Signature
from .float_islands import onnx_kept_float, said_kept
from .gate import BINARY, Judge, check_judgeable, read_labels
from .registry import Tolerance
from .samples import as_inputs

# mode -> what it does. "none" is fp32 (no quantization).
MODES: dict[str, str] = {
    "none": "fp32, no quantization",
    "fp16": "weights stored as float16, computed in float32",
    "dynamic-int8": "int8 weights; activations quantized on the fly (no calibration)",
    "int8": "full integer: int8 weights and activations, calibrated on real samples",
    "bf16": "float32 weights, computed in bfloat16 by the engine (OpenVINO on AMX / AVX-512 bf16 CPUs)",
}
_ALIASES = {"fp32": "none", "float32": "none", "no": "none", "dynamic": "dynamic-int8", "float16": "fp16",
            "full-int8": "int8", "bfloat16": "bf16"}
MODES_BY_TARGET: dict[Format, tuple[str, ...]] = {
    Format.TFLITE: ("none", "fp16", "dynamic-int8", "int8"),
    Format.ONNX: ("none", "dynamic-int8", "int8"),
    Format.EXECUTORCH: ("none", "int8"),
    Format.OPENVINO: ("none", "bf16", "int8"),
}
# Modes a target applies at its own hop even when a hop before it could: a chain ending at the target quantizes
# its last hop and keeps the hops before it exact. OpenVINO's int8 is NNCF on the IR (onnx_openvino.py), which
# calibrates the graph OpenVINO runs, not onnxruntime's QDQ ONNX read back. Any other mode, and other targets
# (keras -> onnx -> tvm at int8 quantizes the onnx hop), apply at the first hop that has the mode.
LAST_HOP_MODES: dict[Format, tuple[str, ...]] = {
    Format.OPENVINO: ("int8",),
}
DEFAULT_MAX_ACCURACY_DROP = 0.01
NO_LABELS = ("no labels; an evaluation .npz needs 'y' (class ids, one-hot or multi-hot rows, or 0/1 for a "
             "one-column output)")
CALIBRATION_SAMPLES = 200  # enough for stable min/max ranges on small nets; calibration stays ~seconds

# Numeric bounds still checked on lossy hops, as a sanity net under the accuracy gate:
# fp16 weights round at ~1e-3 relative, so softmax outputs move by up to ~1e-3; 1e-2 leaves room.
FP16_TOLERANCE = Tolerance(atol=1e-2, min_cosine=0.999)
# int8 errors scale with each output's range, so max abs error is recorded but bounded only loosely
# (probabilities live in [0, 1]: 1.0 catches garbage / NaN only); cosine catches a broken graph and
# the accuracy drop on labelled data is the real gate. The cosine is over every case at once (a broken graph is
# wrong on all of them), not per case: one uncertain sample at batch 1 would fail it alone (Tolerance.pooled_cosine)
INT8_TOLERANCE = Tolerance(atol=1.0, min_cosine=0.98, pooled_cosine=True)
# bf16 keeps 8 bits of mantissa (~4e-3 relative): errors scale with each output's range like int8's (MobileNetV2's
# logits, range +-18, moved by 1.5), so the same loose bounds; the accuracy drop is the gate.
BF16_TOLERANCE = INT8_TOLERANCE


def normalize(mode: str | None) -> str:
    """A user-given mode name -> its canonical name ('fp32' -> 'none', 'dynamic' -> 'dynamic-int8')."""
    key = "none" if mode is None else str(mode).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in MODES:
        raise UnsupportedConversionError(f"unknown quantization mode '{mode}'; valid modes: {', '.join(MODES)}")
    return key


def check_mode(mode: str | None, target: Format) -> str:
    """The canonical mode, if `target` supports it; else UnsupportedConversionError naming the valid ones."""
    key = normalize(mode)
    valid = MODES_BY_TARGET.get(target, ("none",))
    if key not in valid:
        raise UnsupportedConversionError(f"quantization '{key}' is not available for {target.value}; "
                                         f"valid modes for {target.value}: {', '.join(valid)}")
    if key == "bf16" and target == Format.OPENVINO:
        _check_bf16_computed()
    return key


def _check_bf16_computed() -> None:
    """UnsupportedConversionError where OpenVINO's CPU plugin has no bf16 arithmetic here: it would run the IR in
    f32 (it ignores the hint silently), and the accuracy gate would pass f32 off as bf16."""
    from ..runtime.openvino import computes_bf16, cpu_capabilities

    if not computes_bf16():
        raise UnsupportedConversionError(
            f"quantization 'bf16' needs a CPU with bf16 arithmetic (AVX512_BF16 or AMX); OpenVINO on this one "
            f"({', '.join(cpu_capabilities())}) would run the IR in f32, and the accuracy gate would measure f32, not "
            "bf16: convert on the kind of CPU that will run it, or use --quantize int8")


def is_lossy(mode: str | None) -> bool:
    return normalize(mode) != "none"


def tolerance_for(mode: str, base: Tolerance) -> Tolerance:
    """The numeric tolerance of a hop: the edge's own for fp32, loosened for lossy modes (see above)."""
    key = normalize(mode)
    if key == "none":
        return base
    return FP16_TOLERANCE if key == "fp16" else BF16_TOLERANCE if key == "bf16" else INT8_TOLERANCE


# ---------------------------------------------------------------------------------------------- data

def load_npz(path: str | os.PathLike, sig: Signature, need_labels: bool) -> tuple[dict[str, np.ndarray],
                                                                                  np.ndarray | None]:
    """Inputs and labels from a user .npz: `x` (single-input models) or one key per input name, and `y`.

    One-hot `y` (samples x classes) is read as each row's class. Numeric arrays are cast to a float input's
    dtype (np.savez keeps float64 by default; images are often uint8), as convert's parity samples are.
    """
    p = Path(path)
    with _open_npz(p) as data:
        try:
            arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, AttributeError) as exc:
            raise InputError(f"{p}: not a readable .npz file without pickles ({exc})") from exc
    inputs: dict[str, np.ndarray] = {}
    named = as_inputs(dict(arrays), sig.input_names)
    if len(sig.inputs) == 1 and "x" in arrays:
        named.setdefault(sig.input_names[0], arrays["x"])
    for spec in sig.inputs:
        if spec.name not in named:
            want = "'x' or " if len(sig.inputs) == 1 else ""
            raise InputError(f"{p}: no array for input '{spec.name}' (expected keys {want}{sig.input_names}, or "
                             f"np.savez's arr_0... in that order; found {sorted(arrays)})")
        arr = named[spec.name]
        key = next(k for k, v in arrays.items() if v is arr)  # the file's own name for it, in messages
        want = ("N", *("*" if d is None else d for d in spec.shape[1:]))
        if arr.ndim != len(spec.shape) or any(d is not None and d != a for d, a in zip(spec.shape[1:], arr.shape[1:])):
            anything = ", *: any size" if None in spec.shape[1:] else ""
            raise InputError(f"{p}: '{key}' has shape {tuple(arr.shape)}; input '{spec.name}' takes "
                             f"({', '.join(map(str, want))}) (N samples{anything})")
        if arr.dtype.kind in "fiub" and np.dtype(spec.dtype).kind == "f":  # as the parity samples are cast
            arr = arr.astype(spec.dtype)
        inputs[spec.name] = arr
    labels = arrays.get("y")
    if need_labels and labels is None:
        raise InputError(_no_labels(p, arrays))
    if labels is not None:
        try:
            labels = read_labels(np.asarray(labels), p)
        except InputError:
            if need_labels:
                raise
            labels = None  # a regressor's targets beside samples read for calibration or timing: not labels
    if labels is not None:
        sizes = {len(a) for a in inputs.values()} | {len(labels)}
        if len(sizes) != 1:
            raise InputError(f"{p}: inputs and labels have different numbers of samples ({sorted(sizes)})")
    return inputs, labels


def _training(src_manifest: Any) -> dict[str, Any]:
    return (getattr(src_manifest, "training", None) or {}) if src_manifest is not None else {}


def calibration_inputs(src_manifest: Any, sig: Signature, calibration_data: str | None = None,
                       limit: int = CALIBRATION_SAMPLES) -> dict[str, np.ndarray]:
    """Real samples for int8 calibration: a user .npz, else the training split named by the manifest."""
    if calibration_data:
        inputs, _ = load_npz(calibration_data, sig, need_labels=False)
    else:
        training = _training(src_manifest)
        if not training.get("data") or not training.get("model"):
            raise ConversionError("int8 quantization needs calibration samples: the source's manifest names no "
                                  "training data; pass calibration_data (--calibration-data x.npz with 'x' or "
                                  "one array per input name)")
        from ..core import data as _data

        ds = _data.load(training["data"], seed=int(training.get("seed", 0)))
        inputs = _data.inputs_for(training["model"], ds.x_train, sig)
    if sorted(inputs) != sorted(sig.input_names):
        raise ConversionError(f"calibration samples have inputs {sorted(inputs)}, the model {sig.input_names}")
    n = min(limit, min(len(a) for a in inputs.values()))
    return {k: np.ascontiguousarray(v[:n]) for k, v in inputs.items()}


def iter_samples(inputs: Mapping[str, np.ndarray], batch: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """Dicts of `batch` rows each, keyed by input name (what both calibrators consume)."""
    n = min(len(a) for a in inputs.values())
    for start in range(0, n, batch):
        yield {k: v[start:start + batch] for k, v in inputs.items()}


def eval_set(src_manifest: Any, sig: Signature, eval_data: str | None = None
             ) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    """Labelled data for the accuracy gate: a user .npz, else the test split the source was trained with
    (check_data_available ran first)."""
    if eval_data:
        inputs, labels = load_npz(eval_data, sig, need_labels=True)
        return inputs, labels, f"{Path(eval_data).name} (user data)"
    from ..core.data import test_split

    training = _training(src_manifest)
    inputs, labels = test_split(training["data"], training["model"], int(training.get("seed", 0)), sig)
    return inputs, labels, f"{training['data']} test split"


def has_eval_data(src_manifest: Any, eval_data: str | None) -> bool:
    """Whether eval_set has labelled data to give: the user's, or the training set the manifest names."""
    training = _training(src_manifest)
    return bool(eval_data) or bool(training.get("data") and training.get("model"))


def check_data_available(src_manifest: Any, mode: str, calibration_data: str | None, eval_data: str | None,
                         verify: bool = True, signature: Callable[[], Signature] | None = None) -> None:
    """Before any work, everything a quantization mode needs that neither the user nor the source's manifest
    (its training data set) gives, in one message: int8 calibration samples, labelled data for the gate.
    When data is missing and `signature` gives the source's, a model the gate cannot judge (a regressor) is
    told so first: no data would make its quantization acceptable."""
    named = has_eval_data(src_manifest, None)
    missing = []
    if mode == "int8" and not calibration_data and not named:
        missing.append("calibration samples (--calibration-data x.npz: 'x' or one array per input name)")
    if verify and is_lossy(mode) and not eval_data and not named:
        missing.append("labelled data for the accuracy gate (--eval-data test.npz: the inputs and 'y' labels)")
    if missing:
        note = ""
        if verify and is_lossy(mode) and signature is not None:
            j = _judgeable_if_known(signature)
            if j is not None and j.metric == BINARY and not j.dense:
                note = (f" (its output '{j.output}' has one column: 0/1 labels judge it by binary accuracy, a "
                        "regressor's targets by mean absolute error)")
        raise ConversionError(f"quantization '{mode}' needs data that the source's manifest does not name (no "
                              f"training data set): {'; and '.join(missing)}{note}")
    if verify and is_lossy(mode) and eval_data:
        _check_labelled(Path(eval_data))


def warn_if_judged_on_calibration(mode: str, calibration_data: str | None, eval_data: str | None) -> None:
    """A warning line on stderr when int8 is calibrated and judged on the same file: the gate is flattered."""
    if mode == "int8" and calibration_data and eval_data and _same_file(calibration_data, eval_data):
        print(f"warning: the calibration data and the eval data are the same file ({Path(eval_data).name}): the "
              "accuracy gate then judges the int8 model on the samples its ranges were fitted to, which flatters "
              "it; give --eval-data held-out samples (eval_data= in Python)", file=sys.stderr, flush=True)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one is missing: its own check says so
        return False


def _judgeable_if_known(signature: Callable[[], Signature]) -> Judge | None:
    """check_judgeable on the source's signature when it can be read; a source that fails to load is left to
    the missing-data message (the conversion would report its load error after the data is given)."""
    try:
        sig = signature()
    except ModelkitError:
        return None
    return check_judgeable(sig)


def _open_npz(p: Path) -> Any:
    """np.load of a user .npz, never unpickling; a .npy (one bare array, no names) is an InputError too."""
    try:
        data = np.load(p, allow_pickle=False)
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"{p}: not a readable .npz file without pickles ({exc})") from exc
    if not hasattr(data, "files"):  # np.load gave an ndarray: the file is a .npy
        raise InputError(f"{p}: a single array (.npy), not an .npz; save the arrays by name: "
                         "np.savez(path, x=inputs) (and y=labels for --eval-data)")
    return data


def _no_labels(p: Path, names: Any) -> str:
    """The missing-labels message, naming what the file holds (a newcomer's 'label' or 'targets' key)."""
    held = ", ".join(repr(str(n)) for n in names) or "nothing"
    return f"{p}: {NO_LABELS}; it holds {held} (rename the labels' array to 'y')"


def _check_labelled(p: Path) -> None:
    """An --eval-data file without labels fails here, before any work, as it would after the conversion."""
    with _open_npz(p) as data:  # the member names, and the labels (small): no input array is read
        names = list(data.files)
        if "y" not in names:
            raise InputError(_no_labels(p, names))
        read_labels(np.asarray(data["y"]), p)


def check_max_drop(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"max_accuracy_drop must be a number, got {value!r}") from exc
    if math.isnan(out):
        raise InputError("max_accuracy_drop must be a number, got NaN")
    return out


# ----------------------------------------------------------------------------------- ONNX quantizing

def quantize_onnx(fp32: Path, dest: Path, mode: str, calibration: Mapping[str, np.ndarray] | None = None,
                  seven_bit_weights: bool = True) -> None:
    """Quantize an fp32 ONNX file with onnxruntime: dynamic-int8, or int8 = static QDQ calibrated on samples.
    `seven_bit_weights=False` (8-bit weights, which saturate on CPUs without VNNI) is for
    benchmarks/bench_int8_weights.py, which measures what the 7 bits cost."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if mode == "dynamic-int8":
        # onnxruntime's CPU ConvInteger kernel takes uint8 weights only (int8 has no implementation)
        quantize_dynamic(str(fp32), str(dest), weight_type=QuantType.QUInt8, per_channel=False)
        return
    if mode != "int8" or calibration is None:
        raise ConversionError(f"ONNX quantization '{mode}' needs calibration samples" if mode == "int8"
                              else f"no ONNX quantization for mode '{mode}'")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter_samples(calibration, batch=50)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    # Measured on MobileNetV2 224 (batch 1, one thread, this AVX-512 VNNI CPU; docs/performance.md "int8"):
    # S8S8 QDQ ran 0.56-0.60x the fp32 speed, U8S8 QDQ 0.94-1.02x, U8S8 QDQ after quant_pre_process (which
    # folds BatchNorm and constants first, so whole Conv blocks become QLinearConv) 1.9-2.1x. uint8 activations
    # with int8 weights are what the VNNI kernels take. On x86 CPUs without VNNI (AVX2 only: an AMD EPYC) their
    # products saturate in 16 bits: the digits CNN lost 1.7 % and a spectrogram classifier 52 % of accuracy there,
    # and an artifact made on a VNNI machine would lose it silently on such a CPU. reduce_range (7-bit weights,
    # onnxruntime's advice for those CPUs) brought the ONNX int8 tests that failed there back within their gate.
    pre = _preprocessed(fp32)
    try:
        kept = onnx_kept_float(str(pre or fp32))  # a Normalization over raw features (float_islands)
        said_kept(kept)
        quantize_static(str(pre or fp32), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=seven_bit_weights, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=kept)
    finally:
        if pre is not None:
            pre.unlink(missing_ok=True)


def _preprocessed(fp32: Path) -> Path | None:
    """onnxruntime's quantization pre-processing (graph optimisation and shape inference) of `fp32`, beside it;
    None when it cannot (the model then quantizes as it is, slower but the same numbers)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .._quiet import engine_chatter_swallowed

    pre = fp32.with_name(f"{fp32.stem}.pre{fp32.suffix}")
    try:
        with engine_chatter_swallowed():
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001 - an optimisation step only; its failure costs speed, never correctness
        pre.unlink(missing_ok=True)
        return None
    return pre


def quantize_onnx_file(src: Path, dest: Path, sig: Signature, mode: str | None,
                       calibration_data: str | None = None) -> str:
    """Quantize the fp32 ONNX file at `dest` in place (calibrating on the source's data for int8)."""
    from .. import manifest as _manifest

    mode = check_mode(mode, Format.ONNX)
    if mode == "none":
        return mode
    calibration = calibration_inputs(_manifest.read(src), sig, calibration_data) if mode == "int8" else None
    fp32 = dest.with_name(f"{dest.stem}.fp32{dest.suffix}")
    os.replace(dest, fp32)
    try:
        quantize_onnx(fp32, dest, mode, calibration)
    finally:
        fp32.unlink(missing_ok=True)
    return mode
