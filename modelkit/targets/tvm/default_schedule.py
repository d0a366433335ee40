"""Default CPU schedules for an untuned compile: what `tvm.compile` would otherwise leave serial and scalar.

Without a tuning database every PrimFunc that LegalizeOps + FuseTIR produce is a plain loop nest: one
thread, no SIMD. `apply` schedules each one, first with TVM's dlight CPU Reduction rule where it fits
(softmax / norms; not on contractions, where it recomputes a conv's padding per pixel), then with the
generic rule below for the rest (convolutions, matmuls, pooling, elementwise). dlight's CPU GEMV rule is not
used: it vectorizes 128 outputs of an inner-reduction matvec as strided gathers, on which LLVM spent 469 s
for one squeeze-excitation conv of EfficientNetB0 (1152 x 48); it matched no function of the digits CNN,
MobileNetV2 or an MLP (docs/tvm.md):

- chains of elementwise blocks are inlined into one; every remaining block at the function's root is
  scheduled on its own (a fused function's pad and conv each get their loop nest);
- spatial loops go outside, reductions inside, and the innermost spatial loop (contiguous in the
  output) innermost of all, split by the target's vector lanes (a constant extent only: a symbolic batch
  stays a plain loop) and vectorized;
- a reduction accumulates in a local tile of up to 4 x 4 output vectors (registers: each input vector
  loaded feeds several FMAs), initialized and written back vectorized, the elementwise epilogue (bias,
  activation) inlined into the write-back;
- the outer spatial loops are fused and run in parallel when the block has enough work to pay for
  waking the thread pool (a symbolic batch counted as SYMBOLIC_EXTENT rows, a transcendental as
  COSTLY_WEIGHT iterations); a small function the Reduction rule takes is scheduled by it without parallel.

Functions a rule scheduled carry `tirx.is_scheduled`, so nothing later reschedules them. Numbers: see
docs/tvm.md ("Untuned performance").
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

PARALLEL_MIN_WORK = 1 << 15  # loop iterations (spatial x reduction) below which one thread does the block
SYMBOLIC_EXTENT = 16          # what a symbolic extent (a dynamic batch) counts as when weighing that work
COSTLY_MATH = ("exp", "erf", "tanh", "sigmoid", "log", "pow", "sin", "cos")  # calls weighed as COSTLY_WEIGHT
COSTLY_WEIGHT = 16            # iterations: a transcendental per element costs about this many multiply-adds
OUTER_TILE = 4                # per register tile of a reduction: rows, and channels, of output vectors


def apply(mod: Any, tvm_target: Any) -> tuple[Any, int]:
    """Schedule every unscheduled PrimFunc of mod for a CPU (llvm) target: (a new module, functions
    scheduled); mod itself is left as it was. Other targets (CUDA) come back unchanged."""
    from tvm.s_tir import dlight as dl

    if tvm_target.kind.name != "llvm":
        return mod, 0
    before = _scheduled_names(mod)
    with tvm_target:  # dlight's pass updates the module it is given: give it a copy
        out = dl.ApplyDefaultSchedule(*_rules())(mod.clone())
    return out, len(_scheduled_names(out) - before)


def traced(mod: Any, tvm_target: Any) -> Any:
    """The default schedule of a one-function module (a tuning task's workload) as a traced Schedule, whose
    trace MetaSchedule can store as a record and replay on the same workload; None when no rule fits."""
    func = mod["main"]
    with tvm_target:
        for rule in _rules():
            space = rule.apply(func, tvm_target, False)
            if space is not None:
                return space[0] if isinstance(space, list) else space
    return None


def _rules() -> tuple[Any, ...]:
    """The rules in the order they are tried on each function."""
    return _reduction_rule(), _generic_rule()


def _scheduled_names(mod: Any) -> set[str]:
    from tvm import tirx

    return {gv.name_hint for gv, f in mod.functions_items()
            if isinstance(f, tirx.PrimFunc) and int(f.attrs.get("tirx.is_scheduled", 0) if f.attrs else 0) == 1}


def _reduction_rule() -> Any:
    """dlight's CPU Reduction rule (softmax, norms: one row per thread, every block computed at it), kept off
    contractions: on a convolution it recomputes the padded input for every output pixel."""
    from tvm import tirx
    from tvm.s_tir.dlight.cpu import Reduction

    class NonContraction(Reduction):  # type: ignore[misc]
        def apply(self, func: Any, target: Any, tunable: bool) -> Any:
            if not isinstance(func, tirx.PrimFunc) or _has_contraction(func):
                return None
            if _largest_work(func) < PARALLEL_MIN_WORK:
                with _serial():  # its rows computed in cache as the rule does, on the calling thread
                    return super().apply(func, target, tunable)
            return super().apply(func, target, tunable)

    return NonContraction()


def _has_contraction(func: Any) -> bool:
    """Whether a reduction block reads two or more buffers along its reduction axes (conv, matmul), as
    opposed to one (a sum, a max; softmax's max is read along spatial axes only)."""
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.tirx.analysis import undefined_vars

    sch = s_tir.Schedule(func)
    for info in normalize_prim_func(sch) or []:
        stmt = sch.get(info.block_rv)
        reduce_vars = {iv.var for iv in stmt.iter_vars if int(iv.iter_type) == 2}  # CommReduce
        if not reduce_vars:
            continue
        touching = 0
        for region in stmt.reads:
            used = {v for rng in region.region for v in undefined_vars(rng.min)}
            touching += bool(used & reduce_vars)
        if touching >= 2:
            return True
    return False


@contextlib.contextmanager
def _serial() -> Iterator[None]:
    """Schedule.parallel does nothing (and is not traced) while a rule written to parallelize its rows schedules
    a function too small to pay for waking the thread pool (dlight's Reduction rule has no such threshold)."""
    from tvm import s_tir

    parallel = s_tir.Schedule.parallel
    s_tir.Schedule.parallel = lambda self, loop: None
    try:
        yield
    finally:
        s_tir.Schedule.parallel = parallel


def _largest_work(func: Any) -> int:
    """The most loop iterations of any block of func (a symbolic extent counted as SYMBOLIC_EXTENT)."""
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    sch = s_tir.Schedule(func)
    return max((_work(sch, [it.loop_rv for it in info.iters], info.block_rv)
                for info in normalize_prim_func(sch) or []), default=0)


def _work(sch: Any, loops: list[Any], block: Any) -> int:
    """A block's weighed work: its loops' iterations (a symbolic extent counted as SYMBOLIC_EXTENT) x _cost."""
    return _product([_extent(sch, lp) or SYMBOLIC_EXTENT for lp in loops]) * _cost(sch.get(block))


def _cost(block: Any) -> int:
    """An iteration's weight: COSTLY_WEIGHT when the block computes a transcendental (GELU's erf, a softmax's exp),
    else 1, so a GELU over 1k elements a row is worth waking the pool for and a bias add is not."""
    text = str(block)
    return COSTLY_WEIGHT if any(f"T.{name}(" in text for name in COSTLY_MATH) else 1


def _generic_rule() -> Any:
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    class Generic(CPUScheduleRule):  # type: ignore[misc]
        """Parallel outer spatial loops, vectorized innermost spatial loop, reductions serial in between."""

        def apply(self, func: Any, target: Any, _tunable: bool) -> Any:
            from tvm import s_tir, tirx

            if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
                return None
            try:
                sch = s_tir.Schedule(func)
                return sch if schedule_blocks(sch, target) else None
            except Exception:  # a loop nest the primitives refuse: leave the function as it was
                return None

    return Generic()


def schedule_blocks(sch: Any, target: Any) -> bool:
    """Schedule each root block of sch's function; True when at least one was scheduled."""
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.target.codegen import llvm_get_vector_width

    infos = normalize_prim_func(sch)
    if not infos:
        return False
    _inline_elementwise_chains(sch, infos)
    infos = normalize_prim_func(sch)
    if not infos:
        return False
    vector_bits = llvm_get_vector_width(target)
    vector_bits = vector_bits if vector_bits and vector_bits > 0 else 128
    done = 0
    gone: set[str] = set()  # epilogues inlined into a reduction's write-back
    names = [sch.get(info.block_rv).name_hint for info in infos]
    for info, name in zip(infos, names):
        if name in gone:
            continue
        if _schedule_one(sch, info, vector_bits, gone):
            done += 1
    return done > 0


def _inline_elementwise_chains(sch: Any, infos: list[Any]) -> None:
    """Inline each injective block whose consumers are all injective (bias add into relu), so an epilogue is
    one loop nest; producers of a reduction (a convolution's padding) stay blocks of their own."""
    injective = {sch.get(i.block_rv).name_hint for i in infos if i.is_injective()}
    for info in infos[:-1]:
        if not info.is_injective():
            continue
        consumers = sch.get_consumers(info.block_rv)
        if not consumers or any(sch.get(c).name_hint not in injective for c in consumers):
            continue
        try:
            sch.compute_inline(info.block_rv)
        except Exception:  # noqa: BLE001 - not inlinable (e.g. it writes an output): leave it
            pass


def _extent(sch: Any, loop: Any) -> Any:
    from tvm import tirx

    ext = sch.get(loop).extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def _vector_factor(extent: int | None, lanes: int) -> int:
    """The largest divisor of extent up to lanes (>= 2), else 1: a vector loop without a tail."""
    if extent is None or extent < 2:
        return 1
    for d in range(min(lanes, extent), 1, -1):
        if extent % d == 0:
            return d
    return 1


def _schedule_one(sch: Any, info: Any, vector_bits: int, gone: set[str]) -> bool:
    kinds = [it.kind for it in info.iters]
    if not kinds or "O" in kinds or kinds.count("S") == 0:
        return False
    block = info.block_rv
    stmt = sch.get(block)
    if len(stmt.writes) != 1:
        return False
    dtype = stmt.writes[0].source.dtype
    lanes = max(vector_bits // max(dtype.bits, 8), 1) if dtype.lanes == 1 else 1
    spatial = [it.loop_rv for it in info.iters if it.kind == "S"]
    reduce_ = [it.loop_rv for it in info.iters if it.kind == "R"]
    # a symbolic extent (a dynamic batch) counts as a small serving batch: waking the pool costs ~3 us a
    # call, more than a dense head's or a softmax's whole work at batch 1 (4x a text model's call, untuned)
    work = _work(sch, spatial + reduce_, block)

    inner = spatial[-1]
    vec = _vector_factor(_extent(sch, inner), lanes)
    if vec > 1:
        inner_outer, inner_vec = sch.split(inner, factors=[None, vec])
    else:
        inner_outer, inner_vec = inner, None
    outer = spatial[:-1]
    if reduce_:
        # a register tile: up to OUTER_TILE x OUTER_TILE x vec accumulators (in NCHW: channels x rows x
        # columns), reused over the whole reduction: each input vector loaded feeds several FMAs
        unrolled = []
        if inner_vec is not None:
            tiled = []
            for pos in (-1, -2):
                if len(outer) < -pos:
                    break
                t = _vector_factor(_extent(sch, outer[pos]), OUTER_TILE)
                if t > 1:
                    o, i = sch.split(outer[pos], factors=[None, t])
                    outer = outer[:pos] + [o] + (outer[pos + 1:] if pos != -1 else [])
                    tiled.insert(0, i)
            unrolled = tiled
        tile = unrolled + ([inner_vec] if inner_vec is not None else [])
        sch.reorder(*outer, inner_outer, *reduce_, *tile)
        anchor = inner_outer
    else:
        anchor = None
        sch.reorder(*outer, inner_outer, *([inner_vec] if inner_vec is not None else []))

    # parallel: the fused outer spatial loops (or, with none, the outer part of the inner one)
    if work >= PARALLEL_MIN_WORK:
        fusable = outer if reduce_ else _one_symbolic_prefix(sch, outer)
        par = sch.fuse(*fusable) if len(fusable) > 1 else (fusable[0] if fusable else inner_outer)
        sch.parallel(par)
        if not outer:
            anchor = par if reduce_ else anchor

    if inner_vec is not None:
        sch.vectorize(inner_vec)
    if reduce_ and inner_vec is not None and anchor is not None:
        for lp in unrolled:
            sch.unroll(lp)
        wb = sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(wb, anchor, preserve_unit_loops=True)
        init = sch.decompose_reduction(block, reduce_[0])
        _vectorize_last(sch, init)
        _epilogue_into(sch, wb, gone)
        _vectorize_last(sch, wb)
    return True


def _one_symbolic_prefix(sch: Any, loops: list[Any]) -> list[Any]:
    """The outer loops of a block without a reduction to fuse into the parallel one: all of them up to a second
    symbolic extent. Fusing a dynamic batch with constant extents is cheap; fusing it with open image sides too
    (nc72: a pixel shuffle of any size) gives index expressions of nested divisions by symbolic values that TVM's
    simplifier takes minutes on (a 6-D reshape: > 20 min at build). A reduction's (a convolution's) indices are
    affine: it fuses all of them, and keeps its rows in parallel."""
    out: list[Any] = []
    symbolic = 0
    for lp in loops:
        symbolic += _extent(sch, lp) is None
        if symbolic > 1:
            break
        out.append(lp)
    return out


def _epilogue_into(sch: Any, wb: Any, gone: set[str]) -> None:
    """Inline the elementwise epilogue (bias, activation) that reads a reduction's result into the block that
    writes the result back from registers, so it runs on the tile while it is in cache."""
    for _ in range(4):
        consumers = sch.get_consumers(wb)
        if len(consumers) != 1:
            return
        name = sch.get(consumers[0]).name_hint
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:  # noqa: BLE001 - not an elementwise consumer of the whole tile
            return
        gone.add(name)


def _vectorize_last(sch: Any, block: Any) -> None:
    """Vectorize a tile block's innermost loop when its extent is constant."""
    loops = sch.get_loops(block)
    ext = _extent(sch, loops[-1])
    if ext is not None and ext > 1:
        sch.vectorize(loops[-1])


def _product(values: list[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


__all__ = ["apply", "traced", "schedule_blocks", "PARALLEL_MIN_WORK", "SYMBOLIC_EXTENT"]
