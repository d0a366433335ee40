"""What `convert` returns (ConversionResult per artifact written) and raises when some formats failed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import first_line, retyped
from ..formats import Format
from .support import CANNOT


@dataclass
class ConversionResult:
    format: str
    path: str
    seconds: float
    size_bytes: int | None
    parity: dict[str, Any] | None
    quantization: str | None = None
    accuracy: dict[str, Any] | None = None  # lossy hops: source/artifact accuracy, drop, argmax agreement
    route: dict[str, Any] | None = None  # {"taken": route name, "tried": [{"route", "type", "error"}, ...], ...}

    @property
    def max_abs(self) -> float | None:
        """The largest output difference; a quantized artifact's on the samples' own cases (split_max_abs)."""
        outs = (self.parity or {}).get("outputs") or []
        if (self.quantization or "none") != "none":
            from .parity_report import split_max_abs

            return split_max_abs(self.parity)[0]
        return max((o["max_abs"] for o in outs), default=None)



_ANY = CANNOT.format("\0")  # a layer's refusal with its format left out: formats grouped by their reason


def _for(formats: list[str], reason: str) -> str:
    return reason.replace(_ANY, CANNOT.format(formats[0] if len(formats) == 1 else "any of them"))


def partial_failure(results: list[ConversionResult], asked: int,
                    failures: dict[Format, BaseException]) -> BaseException:
    """Some of the `asked` formats failed: the first failure's type (typed as the hop raised it), a message
    naming each failed format and its reason and what was written, and `.results` (written) and `.failures`
    ({format: message}) for callers; the failure of a one-format conversion is raised as is."""
    first = next(iter(failures.values()))
    if asked == 1:
        return first
    made = (r.format + (f" ({r.quantization})" if (r.quantization or "none") != "none" else "") for r in results)
    written = ", ".join(dict.fromkeys(made)) or "nothing"  # onnx (int8), onnx: the quantized file and its exact source
    by_reason: dict[str, list[str]] = {}  # one cause (an unregistered class, a stateful layer) said once
    for f, e in failures.items():
        by_reason.setdefault(first_line(e).replace(CANNOT.format(f.value), _ANY, 1), []).append(f.value)
    reasons = " | ".join(f"{', '.join(fs)}: {_for(fs, reason)}" for reason, fs in by_reason.items())
    exc = retyped(type(first), f"{len(failures)} of {asked} formats failed (written: {written}) | {reasons}",
                  getattr(first, "report", None))
    exc.results, exc.failures = results, {f.value: str(e) for f, e in failures.items()}  # type: ignore[attr-defined]
    return exc
