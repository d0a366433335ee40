"""Hostile ExecuTorch programs: a real .pte (modelkit's tiny Dense model) decoded with ExecuTorch's own serializer
(executorch.exir._serialize, the flatbuffer schema's dataclasses), one field made hostile, and encoded again, so
the file is a well-formed flatbuffer that the runtime's verifier accepts as such and the lie is in the content."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

HUGE = 2**40


def _forward(program: Any) -> Any:
    return next(p for p in program.execution_plan if p.name == "forward")


def _tensor(plan: Any, index: int) -> Any:
    return plan.values[index].val


def _set_plan(sizes: list[int]) -> Callable[[Any], None]:
    def edit(plan: Any) -> None:
        plan.non_const_buffer_sizes = sizes
    return edit


def _set_tensor(field: str, value: Any, which: str = "input") -> Callable[[Any], None]:
    def edit(plan: Any) -> None:
        index = plan.inputs[0] if which == "input" else plan.outputs[0]
        setattr(_tensor(plan, index), field, value)
    return edit


def _set_offset(offset: int) -> Callable[[Any], None]:
    def edit(plan: Any) -> None:
        _tensor(plan, plan.inputs[0]).allocation_info.memory_offset_low = offset % 2**32
        _tensor(plan, plan.inputs[0]).allocation_info.memory_offset_high = offset // 2**32
    return edit


def _set_delegate_call(field: str, value: Any) -> Callable[[Any], None]:
    def edit(plan: Any) -> None:
        setattr(plan.chains[0].instructions[0].instr_args, field, value)
    return edit


def _set_memory_id(memory_id: int) -> Callable[[Any], None]:
    def edit(plan: Any) -> None:
        _tensor(plan, plan.inputs[0]).allocation_info.memory_id = memory_id
    return edit


def _set_delegate_data(index: int) -> Callable[[Any], None]:
    def edit(plan: Any) -> None:
        plan.delegates[0].processed.index = index
    return edit


def _set_io(field: str, index: int) -> Callable[[Any], None]:
    def edit(plan: Any) -> None:
        setattr(plan, field, [index])
    return edit


# name -> an edit of the forward method's plan
EDITS: dict[str, Callable[[Any], None]] = {
    "memory_plan_1TiB": _set_plan([0, HUGE]),
    "memory_plan_negative": _set_plan([0, -1]),
    "memory_plan_missing": _set_plan([0]),
    "input_sizes_2**62_elements": _set_tensor("sizes", [2**31 - 1, 2**31 - 1]),
    "input_sizes_negative": _set_tensor("sizes", [-1, 4]),
    "input_rank_64": _set_tensor("sizes", [1] * 64),
    "input_dim_order_out_of_range": _set_tensor("dim_order", [7, 9]),
    "input_buffer_index_out_of_range": _set_tensor("data_buffer_idx", 10**6),
    "input_memory_id_out_of_range": _set_memory_id(200),
    "input_offset_past_the_plan": _set_offset(HUGE),
    "output_sizes_2**62_elements": _set_tensor("sizes", [2**31 - 1, 2**31 - 1], "output"),
    "delegate_index_out_of_range": _set_delegate_call("delegate_index", 10**6),
    "delegate_argument_out_of_range": _set_delegate_call("args", [10**6, 2]),
    "delegate_data_index_out_of_range": _set_delegate_data(10**6),
    "input_value_index_out_of_range": _set_io("inputs", 10**6),
    "output_value_index_out_of_range": _set_io("outputs", 10**6),
}


def hostile_programs(pte: Path, folder: Path) -> dict[str, Path]:
    """One hostile copy of `pte` per EDITS entry, written into folder as NAME.pte."""
    from executorch.exir._serialize._program import deserialize_pte_binary, serialize_pte_binary

    source = deserialize_pte_binary(pte.read_bytes())
    out = {}
    for name, edit in EDITS.items():
        f = copy.deepcopy(source)
        edit(_forward(f.program))
        path = folder / f"{name}.pte"
        try:  # the delegate's data in a segment, as modelkit writes it
            data = serialize_pte_binary(f, extract_delegate_segments=True)
        except ValueError:  # the serializer refuses to extract a delegate whose data index is a lie: keep it inline
            data = serialize_pte_binary(f, extract_delegate_segments=False)
        path.write_bytes(bytes(data))
        out[name] = path
    return out
