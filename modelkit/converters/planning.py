"""What a conversion will write, decided before any work: the target formats, each artifact's path, and the
quantization mode with the hop of each chain that applies it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from ..errors import UnsupportedConversionError
from ..formats import Format, strip_suffix
from .registry import EdgeSpec, edges

# options the hop itself takes, not any edge: the accuracy gate of lossy hops, the verification samples and
# the inputs of models that define none (modelkit.converters.hop.run_hop)
HOP_OPTIONS = ("eval_data", "max_accuracy_drop", "data", "input_spec")
# options that choose among a pair's routes (modelkit.converters.routes), not passed to any edge
ROUTE_OPTION = "route"


def listed_names(to: str | Format | Iterable[str | Format]) -> list[str]:
    """The names in a comma list or a list of them, empty ones dropped: convert's `to` ('onnx,saved_model' /
    ['onnx', 'tflite'] / Format.ONNX -> ['onnx', 'saved_model'], ...), its route names, optimize's lists."""
    items = [to] if isinstance(to, (str, Format)) else list(to)
    return [n.strip() for item in items for n in str(getattr(item, "value", item)).split(",") if n.strip()]


def parse_targets(to: str | Format | Iterable[str | Format], source: Format) -> list[Format]:
    """'onnx,saved_model' / ['onnx'] / 'all' -> formats; 'all' means every format reachable from source."""
    names = listed_names(to)
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


def quantization(options: dict[str, Any], chains: list[list[EdgeSpec]]) -> str:
    """The canonical quantization mode asked for, checked against every target before any work."""
    from . import quantize as q

    mode = q.normalize(options.get("quantize"))
    if mode != "none":
        for chain in chains:
            check_quantizes(chain, mode)
    return mode


def check_quantizes(chain: list[EdgeSpec], mode: str) -> None:
    """UnsupportedConversionError unless a hop of `chain` applies the (canonical, lossy) `mode`."""
    from . import quantize as q

    quantizing = [e for e in chain if "quantize" in e.options]
    if not quantizing:
        raise UnsupportedConversionError(
            f"quantization '{mode}' does not apply to {chain[-1].target.value}; formats that quantize: "
            f"{', '.join(f.value for f in q.MODES_BY_TARGET)}")
    edge = quantizing_edge(chain, mode)
    q.check_mode(mode, (edge or quantizing[-1]).target)  # none has it: the last says why; else what it needs


def asks_all(to: Any) -> bool:
    """`to` names 'all' (any case)."""
    return any(n.lower() == "all" for n in listed_names(to))


def quantizable(targets: list[Format], chains: list[list[EdgeSpec]], options: dict[str, Any]
                ) -> tuple[list[Format], list[list[EdgeSpec]]]:
    """`--to all` with a quantization: the formats that cannot apply the mode are left out with one line (named
    formats are refused instead: asking for one by name that cannot is a mistake to hear about before any work).
    None left: the first refusal is raised."""
    from . import quantize as q

    mode = q.normalize(options.get("quantize"))
    if mode == "none":
        return targets, chains
    refusals: dict[Format, UnsupportedConversionError] = {}
    for target, chain in zip(targets, chains):
        try:
            check_quantizes(chain, mode)
        except UnsupportedConversionError as exc:
            refusals[target] = exc
    if len(refusals) == len(targets):
        raise next(iter(refusals.values()))
    if refusals:
        from .._text import progress

        progress(f"--to all --quantize {options['quantize']}: leaving out {', '.join(t.value for t in refusals)} "
                 "(no such mode there)")
    kept = [(t, c) for t, c in zip(targets, chains) if t not in refusals]
    return [t for t, _ in kept], [c for _, c in kept]


def quantizing_edge(chain: list[EdgeSpec], mode: str) -> EdgeSpec | None:
    """The hop of a chain that applies `mode`: the first that takes it (keras -> onnx -> openvino at bf16
    quantizes the openvino hop; the onnx hop before it stays exact), or the last when its target applies the mode
    itself (quantize.LAST_HOP_MODES: int8 to openvino is NNCF on the IR). None when no hop takes it."""
    from . import quantize as q

    last = chain[-1] if chain else None
    if last is not None and "quantize" in last.options and mode in q.LAST_HOP_MODES.get(last.target, ()):
        return last
    return next((e for e in chain if "quantize" in e.options and mode in q.MODES_BY_TARGET.get(e.target, ())),
                None)
