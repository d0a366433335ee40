"""--package triton on a CPU with AVX-512 bf16 / AMX: Triton's openvino backend has no f32 setting and runs the IR
in bf16 there, yet optimize measured openvino-fp32 in f32 and chose it as the *exact* candidate over a faster
int8 one (MobileNetV3Small, batch 8), then the packager warned that Triton runs it lossy."""
from __future__ import annotations

import pytest

from modelkit.optimization import candidates as _cands

pytest.importorskip("openvino")


@pytest.mark.parametrize("bf16", [True, False])
def test_openvino_fp32_is_not_a_triton_candidate_where_triton_runs_it_in_bf16(monkeypatch, bf16):
    monkeypatch.setattr(_cands, "_cpu_has_bf16", lambda: bf16)
    by = {b["build"]: b for b in _cands.plan("server-cpu", package="triton")}
    fp32 = by["openvino-fp32"]
    assert (fp32["status"], fp32["reason"]) == (("skipped", _cands.TRITON_OPENVINO_F32) if bf16 else ("planned", None))
    bf16_build = by["openvino-bf16"]  # measured only where the CPU computes in bf16
    assert (bf16_build["status"], bf16_build["reason"]) == (("planned", None) if bf16 else ("skipped", _cands.NO_BF16))
    assert {b["build"]: b for b in _cands.plan("server-cpu", package="kserve")}["openvino-fp32"]["status"] == "planned"
