"""What parity checks return: ParityReport (per output: OutputParity; the cases, the open dimensions verified, the
sizes skipped), its one-line summary and typed failure, and `split_max_abs`, which reads a report's output
difference on the samples apart from the seeded cases at other sizes. modelkit.converters.verify computes them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from ..errors import ParityError, VacuousParityError


@dataclass
class OutputParity:
    name: str
    max_abs: float
    max_rel: float
    cosine: float
    argmax_agreement: float | None
    spread: float  # largest std of the reference output across samples (vacuity guard)
    ok: bool
    reason: str = ""
    # the reference's own float32 error (max |float32 - float64 evaluation| over the cases) and the largest atol
    # applied, when the edge's atol was exceeded and the floor was measured (modelkit.converters._float64)
    float32_floor: float | None = None
    atol_applied: float | None = None
    failed_case: int | None = None  # index in the report's cases of the worst case that failed it, if it failed
    # the reference output hardly varies across the inputs (above the vacuity guard, below WEAK_SPREAD of its
    # scale): the check passes, but proves little (modelkit.converters.output_stats)
    weak: bool = False
    scale: float | None = None  # the largest |reference output| over the cases
    # cases beyond their atol from the reference but within it of the float64 evaluation passed on that: the
    # largest such error against the float64 answer (modelkit.converters._float64)
    float64_error: float | None = None


@dataclass
class ParityReport:
    ok: bool
    reference: str
    candidate: str
    tolerance: dict[str, float]
    inputs: str
    cases: list[dict[str, Any]]
    outputs: list[OutputParity] = field(default_factory=list)
    # {input: {axis: {"dynamic", "verified": [min, max], "sizes", ...}}} for every axis the reference leaves open
    dynamic_dims: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    skipped_cases: list[dict[str, Any]] = field(default_factory=list)  # sizes the reference or candidate refused

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        worst = max(self.outputs, key=lambda o: o.max_abs) if self.outputs else None
        head = "parity OK" if self.ok else "parity FAILED"
        if worst is None:
            return head
        agree = "" if worst.argmax_agreement is None else f", argmax agreement {worst.argmax_agreement:.3f}"
        atol = f"atol {self.tolerance['atol']:.0e}"
        if worst.atol_applied and worst.atol_applied > self.tolerance["atol"]:
            own = f"; the reference's own: {worst.float32_floor:.1e}" if worst.float32_floor is not None else ""
            atol += f", up to {worst.atol_applied:.1e} where float32's own error is larger{own}"
        error = f"max abs error {worst.max_abs:.2e}" if worst.max_abs != float("inf") else "NaN / inf against numbers"
        exact = max((o.float64_error for o in self.outputs if o.float64_error is not None), default=None)
        if exact is not None and self.ok:
            atol += f"; beyond it, within bounds of the float64 evaluation: {exact:.1e} from it"
        return f"{head}: {error} on '{worst.name}' ({atol}){agree}"

    def failures(self) -> str:
        return "; ".join(f"output '{o.name}': {o.reason}" for o in self.outputs if not o.ok)

    def raise_if_failed(self) -> None:
        if self.ok:
            return
        bad = [o for o in self.outputs if not o.ok]
        cls = VacuousParityError if bad and all(o.reason.startswith("vacuous") for o in bad) else ParityError
        hint = (f" (inputs: {self.inputs}; if the model expects other values, pass real samples with --data "
                "samples.npz, keyed by input name)") if cls is VacuousParityError else ""
        raise cls(f"{self.candidate} does not match {self.reference}: {self.failures()}{hint}", self.to_dict())


def split_max_abs(parity: Mapping[str, Any] | None) -> tuple[float | None, float | None]:
    """(largest output difference on the samples' own cases, on the seeded cases at other sizes of an open
    dimension) of a parity dict; (over every case, None) when no case is seeded. A lossy artifact is calibrated on
    real data: its difference on seeded values outside that data says less about it, so it is told apart."""
    cases = (parity or {}).get("cases") or []
    own = [v for c in cases if not c.get("seeded") for v in c.get("max_abs", {}).values()]
    seeded = [v for c in cases if c.get("seeded") for v in c.get("max_abs", {}).values()]
    if not seeded or not own:
        outs = (parity or {}).get("outputs") or []
        return max((o["max_abs"] for o in outs), default=None), None
    return max(own), max(seeded)


def weak_warning(report: Mapping[str, Any] | None) -> str | None:
    """A warning line when a passing report's output hardly varies across its inputs (OutputParity.weak), else
    None; reads a report's dict, as the conversion's children return it."""
    weak = [o for o in (report or {}).get("outputs", ()) if o.get("weak")] if report and report.get("ok") else []
    if not weak:
        return None
    o = max(weak, key=lambda w: w.get("scale") or 0.0)
    return (f"warning: output '{o['name']}' hardly varies across the verification inputs ({report['inputs']}): its "
            f"largest std is {o['spread']:.1e} against values up to {o['scale']:.2g}, so parity proves little; give "
            "--data with inputs as the model receives them in use (after any preprocessing done outside it)")
