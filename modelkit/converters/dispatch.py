"""The parent side of a conversion: each hop of the plan (Hop), reused when a verified intermediate is already
there, else run in a child per backend (modelkit.converters.hop runs it there), with a progress bar."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _child
from .. import manifest as _manifest
from ..errors import ConversionError, ManifestError
from .registry import EdgeSpec
from .result import ConversionResult


@dataclass
class Hop:
    """One hop of the plan: its routes (in order), source and destination, and the routes tried so far."""

    specs: list[EdgeSpec]
    src: Path
    dest: Path
    tried: list[dict[str, Any]]
    quantize: str | None = None  # this hop's own quantization mode, when it differs from the conversion's
    mode: str = "none"  # the quantization its artifact carries (its name says it: cnn.int8.onnx)
    index: int = 0  # 1-based, in plan order (progress lines)
    next: int = 0  # the index in specs of the next route to try
    result: ConversionResult | None = None
    error: BaseException | None = None  # it failed (a conversion to several formats goes on without it)
    probe: dict[str, Any] | None = None  # a hop from .keras: its reference on the probe batch (backend_agreement)

    @property
    def backend(self) -> str:
        return self.specs[self.next].backend or ""


def reuse(hop: Hop, options: dict[str, Any], verify: bool, input_spec: list[dict[str, Any]] | None = None) -> bool:
    """An intermediate artifact already there (the ONNX file on the way to OpenVINO, written by an earlier
    `--to onnx`) is reused, not refused, when its manifest says modelkit made it from this very source (same
    sha256), it is unchanged since (same sha256), it passed its check, was made by a route this conversion
    allows (hop.specs: all of the pair's, or those --route keeps) and carries the same quantization, options and
    input specs;
    the hop is then done (hop.result, from the manifest). Anything else: False, and the usual
    ArtifactExistsError follows."""
    if not hop.dest.exists() or not hop.src.exists():
        return False
    try:
        m = _manifest.read(hop.dest)
    except ManifestError:  # damaged: not reusable (the refusal that follows names the file)
        return False
    if m is None or not m.chain or (m.quantization or "none") != hop.mode:
        return False
    if verify and not (m.parity or {}).get("ok"):
        return False
    if ((m.extra or {}).get("route") or {}).get("taken") not in {s.route for s in hop.specs}:
        return False  # made by a route this conversion does not allow (`--route torch`: a tf2onnx file is not reused)
    made_with = m.chain[-1].get("options") or {}
    lossy_keys = {"quantize", "calibration_data", "eval_data", "max_accuracy_drop"}
    if any(made_with.get(k, v) != v for k, v in options.items() if k in made_with and
           (hop.mode != "none" or k not in lossy_keys) and k != "quantize"):
        return False
    if _specs(input_spec) != _specs((m.extra or {}).get("input_spec")):
        return False  # made at other input shapes: a gcn.onnx kept open, where --input-spec now fixes the sizes
    if (m.source or {}).get("sha256") != _manifest.sha256_of(hop.src) or m.sha256 != _manifest.sha256_of(hop.dest):
        return False
    hop.result = ConversionResult(m.format, str(hop.dest), 0.0, m.size_bytes, m.parity, m.quantization,
                                  (m.extra or {}).get("accuracy"), {"reused": True})
    from .._text import progress

    progress(f"reusing {hop.dest.name}: made from this {hop.src.name} by modelkit, verified and unchanged "
             "(--force converts it again)")
    return True


def _specs(given: list[dict[str, Any]] | None) -> list[tuple[str, list[Any], str]]:
    """Input specs (TensorSpec dicts) in a form that compares regardless of their order."""
    return sorted((d["name"], list(d["shape"]), d["dtype"]) for d in given or [])


def run(hops: list[Hop], common: dict[str, Any], timeout: float | None, keep_going: bool = False) -> None:
    """_run_plan, with a progress bar over the hops on a terminal when there are several (their lines, printed by
    the children, go above it)."""
    from .._progress import steps

    with steps(len(hops), "convert", bar=len(hops) > 1) as bar:
        _run_plan(hops, common, timeout, keep_going, bar)
        bar.set(sum(h.result is not None or h.error is not None for h in hops))


def _run_plan(hops: list[Hop], common: dict[str, Any], timeout: float | None, keep_going: bool, bar: Any) -> None:
    """Run the hops in children, one per backend among the hops whose source exists: a child gets every such
    hop whose next route needs its backend; a hop whose routes in that child all failed goes on with its
    next route in a later child (modelkit.converters.routes). Each hop ends with its `result`; with
    keep_going, a failed hop ends with its `error` instead (and so do the hops that read its artifact), and
    the others go on; else its error is raised."""
    from .routes import next_batch

    for i, hop in enumerate(hops, start=1):
        hop.index = i
    pending = [h for h in hops if h.result is None]  # a reused intermediate is done already
    warned: set[str] = set()  # the verification inputs a weak-parity warning was given for, said once
    while pending:
        for hop in pending:  # the hops that read a failed hop's artifact fail with its cause
            hop.error = next((h.error for h in hops if h.dest == hop.src and h.error is not None), None)
        pending = [h for h in pending if h.error is None]
        bar.set(sum(h.result is not None or h.error is not None for h in hops))
        if not pending:
            break
        waiting = {h.dest for h in pending}
        ready = sorted((h for h in pending if h.src not in waiting), key=lambda h: (h.backend, h.index))
        group = [h for h in ready if h.backend == ready[0].backend]
        payload = []
        for hop in group:
            batch = next_batch(hop.specs, hop.next)
            payload.append({"src": str(hop.src), "dest": str(hop.dest), "source": hop.specs[0].source.value,
                            "target": hop.specs[0].target.value, "routes": [e.route for e in batch],
                            "tried": hop.tried, "last": hop.next + len(batch) == len(hop.specs),
                            "index": hop.index, **common,
                            **({"options": {**common["options"], "quantize": hop.quantize}} if hop.quantize else {})})
        backend = group[0].specs[group[0].next].backend
        try:
            got = _child.run("modelkit.converters.hop:run_hops", {"hops": payload, "keep_going": keep_going},
                             backend=backend, timeout=timeout, error=ConversionError, what="the conversion")
        except ConversionError as exc:  # the child died or timed out: every hop it had fails with that
            if not keep_going:
                raise
            for hop in group:
                hop.error = exc
            continue
        for hop, r in zip(group, got):
            if "error" in r:
                hop.error = _child.rebuild(r["error"], ConversionError)
                continue
            if "failed" in r:  # every route this child could try failed: the next ones run in another child
                hop.tried = r["failed"]
                hop.next += len(next_batch(hop.specs, hop.next))
                continue
            hop.result = ConversionResult(r["format"], r["path"], r["seconds"], r["size_bytes"], r["parity"],
                                          r.get("quantization"), r.get("accuracy"), r.get("route"))
            hop.probe = r.get("probe")
            _warn_if_weak(r["parity"], warned)
        pending = [h for h in pending if h.result is None and h.error is None]


def _warn_if_weak(parity: dict[str, Any] | None, warned: set[str]) -> None:
    """A hop passed parity on inputs across which the source's outputs hardly vary: say so once per inputs
    (stderr, also under -q: it is a warning)."""
    from .._progress import write
    from .parity_report import weak_warning

    line = weak_warning(parity)
    if line and parity["inputs"] not in warned:
        warned.add(parity["inputs"])
        write(line + "\n")  # above the progress bar when one is drawn


def run_and_retry(hops: list[Hop], common: dict[str, Any], timeout: float | None, forced: set[str],
                  keep_going: bool) -> None:
    """run() the hops, then those that failed on what their source's route made (source_route_retries: a
    SourceRouteError, which even a one-format run keeps as the hop's error) once more by the route they name; a
    file the retry needs that an earlier run made is reused when verified and unchanged. The retried hop ends as
    its retry did; the retry's own files join `hops`."""
    run(hops, common, timeout, keep_going=keep_going)
    makes, agains = source_route_retries(hops, forced)
    if not agains:
        return
    for made in makes:
        if not common["force"] and made.dest.exists():
            reuse(made, common["options"], common["verify"], common.get("input_spec"))
    retries = makes + agains
    run(retries, {**common, "total": len(retries)}, timeout, keep_going=keep_going)
    for retry in agains:
        failed = next(h for h in hops if h.dest == retry.dest)
        failed.result, failed.error = retry.result, retry.error
    hops += makes


def source_route_retries(hops: list[Hop], forced: set[str]) -> tuple[list[Hop], list[Hop]]:
    """For each hop that failed with SourceRouteError (OpenVINO refusing tf2onnx's recurrent Loop): the hop before
    it again by the route the error names, into `<name>.<route><suffix>` beside the first route's file (which stays
    for whatever else reads it: the onnx asked for, TVM), once for all the hops that need it (TVM and OpenVINO from
    one ONNX), and the failed hop again from that file: (those files' hops, the failed hops again). None for a hop
    whose source hop's route the user picked (`--route`), or that has no such route."""
    from .._text import progress
    from ..errors import SourceRouteError, first_line
    from ..formats import strip_suffix

    makes: list[Hop] = []
    agains: list[Hop] = []
    for hop in hops:
        if not isinstance(hop.error, SourceRouteError):
            continue
        report = getattr(hop.error, "report", None) or {}
        route = report.get("route")
        before = next((h for h in hops if h.dest == hop.src), None)
        if before is None or {s.route for s in before.specs} & forced:
            continue
        specs = [s for s in before.specs if s.route == route]
        if not specs or before.result is None or (before.result.route or {}).get("taken") == route:
            continue
        dest = before.dest.with_name(f"{strip_suffix(before.dest.name)}.{route}{specs[0].target.suffix}")
        progress(f"{hop.specs[0].target.value}: {before.dest.name}: {report.get('why') or first_line(hop.error)}; "
                 f"converting {before.src.name} to {dest.name} by the {route} route instead")
        if not any(m.dest == dest for m in makes):
            makes.append(Hop(specs, before.src, dest, [], quantize=before.quantize, mode=before.mode))
        agains.append(Hop(hop.specs, dest, hop.dest, [], quantize=hop.quantize, mode=hop.mode))
    return makes, agains
