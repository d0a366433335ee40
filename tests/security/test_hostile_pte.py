"""Hostile ExecuTorch programs (tests/security/_pte.py: a real .pte with one field made a lie, encoded again by
ExecuTorch's own serializer): every one is a typed error in a LoadWorker child, never a crash. Before
modelkit.safety.executorch, a plan whose inputs named value 1000000 of 3 loaded and aborted the process at the
first execute (SIGABRT from the runtime's get_value assert)."""
from __future__ import annotations

import pytest

from ._pte import EDITS, hostile_programs

# the indices the runtime trusts: refused by modelkit's own check, before the runtime sees the file
CHECKED = {"input_value_index_out_of_range", "output_value_index_out_of_range", "delegate_index_out_of_range",
           "delegate_argument_out_of_range"}


@pytest.fixture(scope="module")
def hostile(executorch_artifact, tmp_path_factory):
    return hostile_programs(executorch_artifact, tmp_path_factory.mktemp("hostile_pte"))


def test_the_intact_program_loads_and_runs(executorch_artifact, load_worker):
    assert load_worker.load(executorch_artifact)["ok"]


@pytest.mark.parametrize("name", sorted(EDITS))
def test_hostile_programs_are_typed_errors_never_crashes(name, hostile, load_worker):
    result = load_worker.load(hostile[name])
    assert "crash" not in result and "hang" not in result, result
    assert not result["ok"] and result["typed"], result
    if name == "memory_plan_1TiB":  # the plan is allocated at load: past the worker's address-space limit
        assert result["type"] == "ResourceError" and "ran out of memory" in result["message"], result
        return
    assert result["type"] == "LoadError", result
    if name in CHECKED:
        assert "out of range" in result["message"] and "refused before the runtime runs it" in result["message"]
    else:  # ExecuTorch's own loader refuses these
        assert "ExecuTorch could not load this program" in result["message"], result
