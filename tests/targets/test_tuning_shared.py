"""The shared tuning database (modelkit/targets/tvm/tuning_db.py): two processes committing at once keep
every record on its own workload; a held lock is waited for within a bound; a cut line is dropped."""
import subprocess
import sys

import pytest

from modelkit.errors import ConversionError
from modelkit.targets.tvm import tuning_db

pytest.importorskip("tvm")

# Commits K records for its own workload (an elementwise loop of length N) and K for a common one (length 5),
# one at a time, once the test says go: the two children interleave their appends to the same two files.
CHILD = r"""
import sys, time
from pathlib import Path
import tvm
from tvm import te
import tvm.s_tir as st
from tvm.s_tir import meta_schedule as ms
from modelkit.targets.tvm import tuning_db

db_dir, n, k, go = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])

def workload(size):
    a = te.placeholder((size,), name="a")
    f = te.create_prim_func([a, te.compute((size,), lambda i: a[i] * 2.0, name="b")])
    sch = st.Schedule(tvm.IRModule({"main": f}))
    sch.parallel(sch.get_loops(sch.get_sblock("b"))[0])
    return tvm.IRModule({"main": f}), f, sch.trace

db = tuning_db.open_shared(db_dir)
print("ready", flush=True)
deadline = time.monotonic() + 120
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
target = tvm.target.Target("llvm")
for i in range(k):
    for mod, f, trace in (workload(n), workload(5)):
        w = db.commit_workload(mod)
        db.commit_tuning_record(ms.database.TuningRecord(trace, w, run_secs=[1e-3 * (i + 1)], target=target,
                                                         args_info=ms.arg_info.ArgInfo.from_prim_func(f)))
print("done", flush=True)
"""


def _mod(size: int):
    import tvm
    from tvm import te

    a = te.placeholder((size,), name="a")
    return tvm.IRModule({"main": te.create_prim_func([a, te.compute((size,), lambda i: a[i] * 2.0, name="b")])})


@pytest.mark.slow
def test_two_processes_committing_at_once_keep_each_record_on_its_workload(tmp_path):
    """Without the lock and the reload, both children would write their first workload as line 0 and
    one child's records would point at the other's workload."""
    from tvm.s_tir import meta_schedule as ms

    db_dir, go, k = tmp_path / "db", tmp_path / "go", 12
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(db_dir), str(n), str(k), str(go)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (7, 9)]
    try:
        assert [c.stdout.readline().strip() for c in children] == ["ready", "ready"]
        go.touch()
        outs = [c.communicate(timeout=240) for c in children]
    finally:
        for c in children:
            c.kill() if c.poll() is None else None
    assert [c.returncode for c in children] == [0, 0], [err[-2000:] for _, err in outs]
    assert len((db_dir / tuning_db.WORKLOADS).read_text().splitlines()) == 3  # 7, 9 and the common 5 once
    db = ms.database.JSONDatabase(path_workload=str(db_dir / tuning_db.WORKLOADS),
                                  path_tuning_record=str(db_dir / tuning_db.RECORDS))
    assert len(db) == 4 * k
    assert [tuning_db.valid_records(db, _mod(n), 1000) for n in (7, 9, 5)] == [k, k, 2 * k]


def test_a_held_lock_is_waited_for_within_a_bound(tmp_path):
    with tuning_db.locked(tmp_path):
        with pytest.raises(ConversionError, match=r"tuning database .* stayed locked by another process for 0 s"):
            with tuning_db.locked(tmp_path, timeout_s=0.2):
                pass
    with tuning_db.locked(tmp_path, timeout_s=0.2):  # released: taken at once
        pass


def test_a_line_cut_by_a_killed_writer_is_dropped_at_the_next_open(tmp_path):
    import tvm
    import tvm.s_tir as st
    from tvm.s_tir import meta_schedule as ms

    mod = _mod(6)
    sch = st.Schedule(mod)
    sch.parallel(sch.get_loops(sch.get_sblock("b"))[0])
    db = tuning_db.open_shared(tmp_path)
    db.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, db.commit_workload(mod), run_secs=[1e-3], target=tvm.target.Target("llvm"),
        args_info=ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
    records = tmp_path / tuning_db.RECORDS
    whole = records.read_bytes()
    records.write_bytes(whole + b'[0,[[["GetSBlock"')  # a writer killed mid-line
    again = tuning_db.open_shared(tmp_path)
    assert len(again) == 1 and records.read_bytes() == whole
    assert tuning_db.valid_records(again.inner, mod, 10) == 1


def test_an_unreadable_database_is_a_typed_error_naming_it(tmp_path):
    (tmp_path / tuning_db.WORKLOADS).write_text("not json at all\n")
    with pytest.raises(ConversionError, match=r"tuning database .* cannot be read .*move it away"):
        tuning_db.open_shared(tmp_path)
