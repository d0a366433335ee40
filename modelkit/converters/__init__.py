"""`convert(source, to=...)`: plan the chains of edges (planning.py), run each hop in a child process with the
backend it needs (dispatch.py), verify every hop, and return what was written (result.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterable

from .. import _atomic
from .. import manifest as _manifest
from ..errors import ArtifactExistsError, ConversionError, UnsupportedConversionError
from ..formats import Format, detect
from .dispatch import Hop, reuse, run_and_retry
from .planning import (
    HOP_OPTIONS,
    ROUTE_OPTION,
    asks_all,
    output_path,
    parse_targets,
    quantizable,
    quantization,
    quantizing_edge,
)
from .registry import converter, edges, plan
from .result import ConversionResult, partial_failure

__all__ = ["convert", "converter", "plan", "edges", "ConversionResult", "parse_targets", "output_path"]


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
        if options["input_spec"] and src_fmt != Format.KERAS:  # it shapes how a .keras model is loaded, nothing else
            fix = (f"; to fix an ONNX model's open dimensions for TVM: modelkit compile {src.name} --input-spec ..."
                   if src_fmt == Format.ONNX else "")
            raise ConversionError(f"--input-spec fixes the inputs of a .keras source; {src.name} is {src_fmt.value}, "
                                  f"whose inputs are what its file says{fix}")
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
        from .._text import progress
        from ..keras_io.files import check_keras_archive
        from ..keras_io.policy import note as mixed_note
        from .support import check_rules

        config = check_keras_archive(src)
        if (line := mixed_note(config, src.name)) is not None:
            progress(line)
        for target, chain in zip(targets, chains):  # refused when every route refuses, naming the format asked for
            names = [e.route for e in pair_routes(*chain[0].pair) if e.route in forced] if len(chain) == 1 else []
            try:
                check_rules(src, target, config, names or None)
            except UnsupportedConversionError as exc:
                if len(targets) == 1:
                    raise
                refused[target] = exc  # several formats: the others still convert (_finish reports it)
        if len(refused) == len(targets):
            raise partial_failure([], len(targets), refused)
        targets, chains = [t for t in targets if t not in refused], [c for t, c in zip(targets, chains)
                                                                      if t not in refused]
    if asks_all(to) and options.get("quantize"):  # `--to all --quantize M`: every format that can take M
        targets, chains = quantizable(targets, chains, options)
    mode = quantization(options, chains)
    if mode != "none":
        from . import quantize as q

        q.check_data_available(_manifest.read(src), mode, options.get("calibration_data"), hop_opts.get("eval_data"),
                               verify, signature=lambda: _source_signature(src, trust_unsafe_code))
        if verify:
            q.warn_if_judged_on_calibration(mode, options.get("calibration_data"), hop_opts.get("eval_data"))
    if "quantize" in options:
        options["quantize"] = mode  # canonical name ('fp32' -> 'none') in every manifest
    hops: list[Hop] = []
    finals: list[Path] = []  # each target's artifact
    for chain in chains:
        current = src
        tag = None
        quantizer = quantizing_edge(chain, mode) if mode != "none" else None
        for edge in chain:
            tag = tag or (mode if edge is quantizer else None)  # downstream of a quantized hop too
            dest = output_path(src, edge.target, out, tag)
            if not any(h.dest == dest for h in hops):
                specs, skipped = hop_routes(edge.source, edge.target, forced, options, config)
                # a hop before the quantizing one that could quantize too stays exact
                own = "none" if quantizer is not None and edge is not quantizer and "quantize" in edge.options else None
                hops.append(Hop(specs, current, dest, tried=skipped, quantize=own, mode=tag or "none"))
            current = dest
        finals.append(current)
    existing = []
    for hop in hops:
        if not force and hop.dest not in finals and reuse(hop, options, verify, hop_opts.get("input_spec")):
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
        run_and_retry(hops, common, timeout, forced, keep_going=asked > 1)
    except BaseException:
        _remove_if_empty(out, created)
        raise
    by_dest = {h.dest: h for h in hops}
    for target, final in zip(targets, finals):
        if by_dest[final].error is not None:
            refused[target] = by_dest[final].error
    _warn_if_backends_disagree(src, targets, finals, by_dest)
    results = [h.result for h in hops if h.result is not None]
    if refused:
        _remove_if_empty(out, created)
        raise partial_failure(results, asked, refused)
    return results


def _warn_if_backends_disagree(src: Path, targets: list[Format], finals: list[Path], by_dest: dict[Path, Any]) -> None:
    """The warning of backend_agreement.disagreement, on stderr, when the formats written from a .keras source were
    made under backends whose Keras computes it differently."""
    from .backend_agreement import disagreement

    probes = []
    for target, final in zip(targets, finals):
        hop = by_dest[final]
        while hop.src != src and hop.src in by_dest:  # back to the hop from the source (tvm: from the .keras's onnx)
            hop = by_dest[hop.src]
        if by_dest[final].error is None and hop.probe:
            probes.append((target.value, hop.probe))
    if (line := disagreement(src.name, probes)) is not None:
        print(line, file=sys.stderr, flush=True)


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


def _source_signature(src: Path, trust_unsafe_code: bool) -> Any:
    """The source's Signature, loading it with the runtime (only asked for on an error path)."""
    from ..runtime import load

    return load(src, trust_unsafe_code=trust_unsafe_code).signature
