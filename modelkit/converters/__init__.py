"""`convert(source, to=...)`: plan the chains of edges, run each hop in a child process with the
backend it needs, verify every hop, and return what was written.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .. import _atomic, _child
from .. import manifest as _manifest
from ..errors import (
    ArtifactExistsError,
    ConversionError,
    ManifestError,
    UnsupportedConversionError,
    first_line,
    retyped,
)
from ..formats import Format, detect, strip_suffix
from .registry import EdgeSpec, converter, edges, plan

__all__ = ["convert", "converter", "plan", "edges", "ConversionResult", "parse_targets", "output_path"]


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
        outs = (self.parity or {}).get("outputs") or []
        return max((o["max_abs"] for o in outs), default=None)


def parse_targets(to: str | Format | Iterable[str | Format], source: Format) -> list[Format]:
    """'onnx,saved_model' / ['onnx'] / 'all' -> formats; 'all' means every format reachable from source."""
    items = [to] if isinstance(to, (str, Format)) else list(to)
    names = [n.strip() for item in items for n in str(getattr(item, "value", item)).split(",") if n.strip()]
    if not names:
        raise UnsupportedConversionError("no target format given; e.g. --to onnx,saved_model")
    if "all" in names:
        return sorted({t for (s, t) in edges() if s == source} | _reachable(source), key=lambda f: f.value)
    return list(dict.fromkeys(Format.parse(n) for n in names))


def _reachable(source: Format) -> set[Format]:
    found, frontier = set(), {source}
    while frontier:
        nxt = {t for (s, t) in edges() if s in frontier} - found - {source}
        found |= nxt
        frontier = nxt
    return found


def output_path(source: Path, fmt: Format, out_dir: Path, quantization: str | None = None) -> Path:
    """`cnn.keras` -> `out_dir/cnn.onnx`; quantized artifacts carry the mode: `cnn.int8.tflite`."""
    stem = strip_suffix(source.name)
    tag = f".{quantization}" if quantization and quantization != "none" else ""
    return out_dir / f"{stem}{tag}{fmt.suffix}"


# options the hop itself takes, not any edge: the accuracy gate of lossy hops, the verification samples and
# the inputs of models that define none (modelkit.converters.hop.run_hop)
HOP_OPTIONS = ("eval_data", "max_accuracy_drop", "data", "input_spec")
# options that choose among a pair's routes (modelkit.converters.routes), not passed to any edge
ROUTE_OPTION = "route"


def _quantization(options: dict[str, Any], chains: list[list[EdgeSpec]]) -> str:
    """The canonical quantization mode asked for, checked against every target before any work."""
    from . import quantize as q

    mode = q.normalize(options.get("quantize"))
    if mode == "none":
        return mode
    for chain in chains:
        quantizing = [e for e in chain if "quantize" in e.options]
        if not quantizing:
            raise UnsupportedConversionError(
                f"quantization '{mode}' does not apply to {chain[-1].target.value}; formats that quantize: "
                f"{', '.join(f.value for f in q.MODES_BY_TARGET)}")
        if _quantizing_edge(chain, mode) is None:  # no hop of the chain has the mode: the last one says why
            q.check_mode(mode, quantizing[-1].target)
    return mode


def _asks_all(to: Any) -> bool:
    items = [to] if isinstance(to, (str, Format)) else list(to)
    return any(n.strip().lower() == "all" for item in items for n in str(getattr(item, "value", item)).split(","))


def _quantizable(targets: list[Format], chains: list[list[EdgeSpec]], options: dict[str, Any]
                 ) -> tuple[list[Format], list[list[EdgeSpec]]]:
    """`--to all` with a quantization: the formats that cannot apply the mode are left out with one line (named
    formats are refused instead: asking for one by name that cannot is a mistake to hear about before any work).
    None left: the first refusal is raised."""
    kept = [(t, c) for t, c in zip(targets, chains) if _refusal(options, c) is None]
    if not kept:
        raise _refusal(options, chains[0]) or UnsupportedConversionError("no format takes this quantization")
    left = [t.value for t, c in zip(targets, chains) if (t, c) not in kept]
    if left:
        from .._text import progress

        progress(f"--to all --quantize {options['quantize']}: leaving out {', '.join(left)} (no such mode there)")
    return [t for t, _ in kept], [c for _, c in kept]


def _refusal(options: dict[str, Any], chain: list[EdgeSpec]) -> UnsupportedConversionError | None:
    try:
        _quantization(options, [chain])
    except UnsupportedConversionError as exc:
        return exc
    return None


def _quantizing_edge(chain: list[EdgeSpec], mode: str) -> EdgeSpec | None:
    """The hop of a chain that applies `mode`: the first that takes it (keras -> onnx -> openvino at bf16
    quantizes the openvino hop; the onnx hop before it stays exact), or the last when its target applies the mode
    itself (quantize.LAST_HOP_MODES: int8 to openvino is NNCF on the IR). None when no hop takes it."""
    from . import quantize as q

    last = chain[-1] if chain else None
    if last is not None and "quantize" in last.options and mode in q.LAST_HOP_MODES.get(last.target, ()):
        return last
    return next((e for e in chain if "quantize" in e.options and mode in q.MODES_BY_TARGET.get(e.target, ())),
                None)


def convert(source: str | os.PathLike, to: Any, out_dir: str | os.PathLike | None = None, force: bool = False,
            verify: bool = True, options: dict[str, Any] | None = None, trust_unsafe_code: bool = False,
            atol: float | None = None, timeout: float | None = None, data: str | os.PathLike | None = None,
            input_spec: Iterable[str] | str | None = None) -> list[ConversionResult]:
    """Convert `source` to each format in `to`, through the shortest chain of pairs for each.

    Every hop is verified against its own source unless verify=False; intermediate artifacts (e.g.
    the ONNX file on the way to TVM) are written and verified too. Existing outputs are refused
    before any work starts unless force=True. options apply to every edge that takes them; atol
    replaces every edge's absolute tolerance (to tighten it, or to loosen it knowingly).

    Routes: a pair may have several (modelkit.converters.registry.ROUTES, e.g. keras -> onnx by tf2onnx, then
    by torch.onnx); a hop tries them in order and the result, like the manifest, says which one it took
    and why the others failed (ConversionResult.route). options={"route": "torch"} (or "torch,unrolled")
    keeps only the routes of that name for the pairs that have one.

    Quantization: options={"quantize": "int8" | "dynamic-int8" | "fp16", "calibration_data": "x.npz",
    "eval_data": "test.npz", "max_accuracy_drop": 0.01}. A quantized hop is judged by the accuracy drop
    on labelled data (the source's test split by default) and its output is named after the mode
    (`cnn.int8.tflite`), so fp32 and quantized artifacts coexist.

    data: a .npz of samples every hop is verified on (keys: input names, or `x` for a one-input model),
    instead of the training data set, ranges inferred from the model, or uniform [0, 1) (samples.py).
    input_spec: the inputs of a model that defines none (a subclassed model), e.g. ["x:?,8:float32"];
    by default they come from the shapes saved with the model (modelkit.keras_io.inputs).

    Several formats: one that fails or is refused does not stop the others. The error raised at the end
    has the first failure's type, names every failed format with its reason, and carries `.results` (the
    artifacts written) and `.failures` ({format: message}). One format: its error, unchanged.
    """
    from ..keras_io.inputs import parse_input_specs
    from .registry import routes as pair_routes
    from .routes import forced_routes, hop_routes

    src = Path(source)
    src_fmt = detect(src)
    out = Path(out_dir) if out_dir is not None else src.parent
    options = dict(options or {})
    if data is not None:
        options["data"] = os.fspath(data)
    if input_spec is not None:
        options["input_spec"] = input_spec
    if options.get("input_spec") is not None:
        options["input_spec"] = [s.to_dict() for s in parse_input_specs(options["input_spec"])] or None
    for key in ("calibration_data", "eval_data", "data"):
        if options.get(key):
            options[key] = str(Path(options[key]).resolve())
    hop_opts = {k: options.pop(k) for k in HOP_OPTIONS if options.get(k) is not None}
    route_names = options.pop(ROUTE_OPTION, None)
    targets = parse_targets(to, src_fmt)
    chains = [plan(src_fmt, target) for target in targets]
    forced = forced_routes(route_names, [(e.source, e.target) for chain in chains for e in chain])
    config = None
    refused: dict[Format, BaseException] = {}
    if src_fmt == Format.KERAS:
        from ..keras_io.files import check_keras_archive
        from .support import check_rules

        config = check_keras_archive(src)
        for target, chain in zip(targets, chains):  # refused when every route refuses, naming the format asked for
            names = [e.route for e in pair_routes(*chain[0].pair) if e.route in forced] if len(chain) == 1 else []
            try:
                check_rules(src, target, config, names or None)
            except UnsupportedConversionError as exc:
                if len(targets) == 1:
                    raise
                refused[target] = exc  # several formats: the others still convert (_finish reports it)
        if len(refused) == len(targets):
            raise _partial([], len(targets), refused)
        targets, chains = [t for t in targets if t not in refused], [c for t, c in zip(targets, chains)
                                                                      if t not in refused]
    if _asks_all(to) and options.get("quantize"):  # `--to all --quantize M`: every format that can take M
        targets, chains = _quantizable(targets, chains, options)
    mode = _quantization(options, chains)
    if mode != "none":
        from . import quantize as q

        q.check_data_available(_manifest.read(src), mode, options.get("calibration_data"), hop_opts.get("eval_data"),
                               verify)
    if "quantize" in options:
        options["quantize"] = mode  # canonical name ('fp32' -> 'none') in every manifest
    hops: list[_Hop] = []
    finals: list[Path] = []  # each target's artifact
    for chain in chains:
        current = src
        tag = None
        quantizer = _quantizing_edge(chain, mode) if mode != "none" else None
        for edge in chain:
            tag = tag or (mode if edge is quantizer else None)  # downstream of a quantized hop too
            dest = output_path(src, edge.target, out, tag)
            if not any(h.dest == dest for h in hops):
                specs, skipped = hop_routes(edge.source, edge.target, forced, options, config)
                # a hop before the quantizing one that could quantize too stays exact
                own = "none" if quantizer is not None and edge is not quantizer and "quantize" in edge.options else None
                hops.append(_Hop(specs, current, dest, tried=skipped, quantize=own, mode=tag or "none"))
            current = dest
        finals.append(current)
    existing = []
    for hop in hops:
        if not force and hop.dest not in finals and not route_names and _reuse(hop, options, verify):
            continue
        if not force and hop.dest.exists():
            existing.append(hop.dest)
    if len(existing) == 1:
        _atomic.check_writable(existing[0], force)
    elif existing:  # every one named at once, not one per run (`--to all` beside earlier artifacts)
        raise ArtifactExistsError(f"{len(existing)} artifacts exist: {', '.join(str(p) for p in existing)}; pass "
                                  "--force (force=True) to overwrite them, or --out another folder")
    created = _first_missing(out)
    _atomic.make_dirs(out)
    common = {"options": options, "verify": verify, "force": force, "trust_unsafe_code": trust_unsafe_code,
              "atol": atol, "total": len(hops), **hop_opts}
    asked = len(targets) + len(refused)
    try:
        _run(hops, common, timeout, keep_going=asked > 1)
    except BaseException:
        _remove_if_empty(out, created)
        raise
    by_dest = {h.dest: h for h in hops}
    for target, final in zip(targets, finals):
        if by_dest[final].error is not None:
            refused[target] = by_dest[final].error
    results = [h.result for h in hops if h.result is not None]
    if refused:
        _remove_if_empty(out, created)
        raise _partial(results, asked, refused)
    return results


def _first_missing(out: Path) -> Path | None:
    """The outermost folder of `out` that does not exist yet (what make_dirs creates), or None."""
    top, p = None, out.absolute()
    while not p.exists() and p != p.parent:
        top, p = p, p.parent
    return top


def _remove_if_empty(out: Path, created: Path | None) -> None:
    """The folders this run created for `out`, when it failed before writing anything there (a bad --data or
    --calibration-data file): not left behind empty. rmdir refuses a folder that holds anything."""
    p = out.absolute()
    while created is not None:
        try:
            p.rmdir()
        except OSError:
            return
        if p == created:
            return
        p = p.parent


def _reuse(hop: _Hop, options: dict[str, Any], verify: bool) -> bool:
    """An intermediate artifact already there (the ONNX file on the way to OpenVINO, written by an earlier
    `--to onnx`) is reused, not refused, when its manifest says modelkit made it from this very source (same
    sha256), it is unchanged since (same sha256), it passed its check and it carries the same quantization and
    options; the hop is then done (hop.result, from the manifest). Anything else: False, and the usual
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
    made_with = m.chain[-1].get("options") or {}
    lossy_keys = {"quantize", "calibration_data", "eval_data", "max_accuracy_drop"}
    if any(made_with.get(k, v) != v for k, v in options.items() if k in made_with and
           (hop.mode != "none" or k not in lossy_keys) and k != "quantize"):
        return False
    if (m.source or {}).get("sha256") != _manifest.sha256_of(hop.src) or m.sha256 != _manifest.sha256_of(hop.dest):
        return False
    hop.result = ConversionResult(m.format, str(hop.dest), 0.0, m.size_bytes, m.parity, m.quantization,
                                  (m.extra or {}).get("accuracy"), {"reused": True})
    from .._text import progress

    progress(f"reusing {hop.dest.name}: made from this {hop.src.name} by modelkit, verified and unchanged "
             "(--force converts it again)")
    return True


def _partial(results: list[ConversionResult], asked: int, failures: dict[Format, BaseException]) -> BaseException:
    """Some of the `asked` formats failed: the first failure's type (typed as the hop raised it), a message
    naming each failed format and its reason and what was written, and `.results` (written) and `.failures`
    ({format: message}) for callers; the failure of a one-format conversion is raised as is."""
    first = next(iter(failures.values()))
    if asked == 1:
        return first
    written = ", ".join(r.format + (f" ({r.quantization})" if (r.quantization or "none") != "none" else "")
                        for r in results) or "nothing"  # onnx (int8), onnx: the quantized file and its exact source
    by_reason: dict[str, list[str]] = {}  # one cause (an unregistered class) is said once for its formats
    for f, e in failures.items():
        by_reason.setdefault(first_line(e), []).append(f.value)
    reasons = " | ".join(f"{', '.join(fs)}: {reason}" for reason, fs in by_reason.items())
    exc = retyped(type(first), f"{len(failures)} of {asked} formats failed (written: {written}) | {reasons}",
                  getattr(first, "report", None))
    exc.results, exc.failures = results, {f.value: str(e) for f, e in failures.items()}  # type: ignore[attr-defined]
    return exc


@dataclass
class _Hop:
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

    @property
    def backend(self) -> str:
        return self.specs[self.next].backend or ""


def _run(hops: list[_Hop], common: dict[str, Any], timeout: float | None, keep_going: bool = False) -> None:
    """_run_plan, with a progress bar over the hops on a terminal when there are several (their lines, printed by
    the children, go above it)."""
    from .._progress import steps

    with steps(len(hops), "convert", bar=len(hops) > 1) as bar:
        _run_plan(hops, common, timeout, keep_going, bar)
        bar.set(sum(h.result is not None or h.error is not None for h in hops))


def _run_plan(hops: list[_Hop], common: dict[str, Any], timeout: float | None, keep_going: bool, bar: Any) -> None:
    """Run the hops in children, one per backend among the hops whose source exists: a child gets every such
    hop whose next route needs its backend; a hop whose routes in that child all failed goes on with its
    next route in a later child (modelkit.converters.routes). Each hop ends with its `result`; with
    keep_going, a failed hop ends with its `error` instead (and so do the hops that read its artifact), and
    the others go on; else its error is raised."""
    from .routes import next_batch

    for i, hop in enumerate(hops, start=1):
        hop.index = i
    pending = [h for h in hops if h.result is None]  # a reused intermediate is done already
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
        pending = [h for h in pending if h.result is None and h.error is None]
