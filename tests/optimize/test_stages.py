"""Which candidates optimize measures together: with more than MAX_WORKERS, every build at the most threads, then
every thread count of the finalists in one set (measure() is stubbed: the staging is what is tested)."""
from __future__ import annotations

from modelkit.optimization import measure as _measure_mod
from modelkit.optimization import stages


class _Bar:
    def note(self, message: str) -> None:
        pass

    def advance(self, message: str) -> None:
        pass


def test_the_finalists_thread_counts_are_measured_side_by_side_in_one_set(monkeypatch, tmp_path):
    """9 builds x 2 thread counts + the baseline is more than 16: the first set measures each build at 2 threads,
    the second every thread count of the 4 fastest builds, both of them afresh (the 2-thread one was left out of
    the second set, its first-set figure set against the 1-thread figures of another set)."""
    sets: list[list[tuple[str, str]]] = []

    def fake(todo, batch, data, rounds, deadline):
        sets.append([(c["key"], c["status"]) for c in todo])
        for c in todo:
            if c["status"] == "built" or c.get("mode") == "keras.predict":
                n = int(c["build"][1:]) if c["build"].startswith("b") else 99  # b0 fastest
                c.update(status="measured", p50_ms=float(n + len(sets)), p99_ms=1.0, ci95_ms=[0.0, 99.0],
                         rounds_ms=[1.0], calls=3, accuracy=None, load_s=0.1, batch=batch)
        return todo

    monkeypatch.setattr(_measure_mod, "measure", fake)
    cands = [{"key": f"b{i}-t{t}", "build": f"b{i}", "threads": t, "status": "built", "sha256": f"s{i}"}
             for i in range(9) for t in (1, 2)]
    cands.append({"key": "keras.predict", "build": "keras.predict", "mode": "keras.predict", "threads": None,
                  "status": "built", "sha256": "k"})
    prepared = {"data": None, "data_sha256": None}
    out = stages.staged(cands, 1, prepared, (1, 2), tmp_path, 1e12, 1, _Bar())
    assert len(sets) == 2
    assert sorted(k for k, _ in sets[0]) == sorted([f"b{i}-t2" for i in range(9)] + ["keras.predict"])
    assert sorted(sets[1]) == sorted((f"b{i}-t{t}", "built") for i in range(4) for t in (1, 2))
    by_key = {c["key"]: c for c in out}
    assert by_key["b0-t2"]["p50_ms"] == 2.0 and by_key["b0-t1"]["p50_ms"] == 2.0  # both from the second set
    assert by_key["b8-t2"]["status"] == "measured" and by_key["b8-t1"]["status"] == "skipped"
    assert "not a finalist" in by_key["b8-t1"]["reason"] and all(c["status"] == "built" for c in cands)
