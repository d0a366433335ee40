"""The machine's peak fp32 FLOP rate, estimated from /proc/cpuinfo, and achieved rates against it.

    peak GFLOP/s = physical cores x clock GHz x fp32 FLOPs per cycle per core

FLOPs per cycle per core come from the widest SIMD the CPU flags advertise, assuming two FMA units
(true of server x86 cores since Haswell / Skylake-SP; a one-FMA-unit part has half):
  AVX-512F  : 2 FMA units x 16 lanes x 2 (mul+add) = 64
  AVX2 + FMA: 2 x  8 x 2 = 32
  AVX       : 8-wide add + 8-wide mul per cycle   = 16
  SSE2      : 4-wide add + 4-wide mul             =  8
  ARM ASIMD : 2 x 4 x 2 = 16;   otherwise scalar  =  2
The clock is the CPU's maximum frequency from sysfs when readable, else the highest 'cpu MHz' in
/proc/cpuinfo (which is the current, possibly throttled, clock). Cores are distinct (physical id, core id)
pairs, capped by the CPUs this process may run on. MODELKIT_PEAK_GFLOPS overrides the estimate.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

SIMD_LEVELS = (  # (flag that must be present, name, fp32 FLOPs per cycle per core)
    ("avx512f", "avx512", 64), ("avx2", "avx2+fma", 32), ("avx", "avx", 16), ("sse2", "sse2", 8),
    ("asimd", "neon", 16),
)
FORMULA = "peak GFLOP/s = physical cores x clock GHz x fp32 FLOPs/cycle/core"


def flops_per_cycle(flags: set[str]) -> tuple[str, int]:
    """(SIMD level name, fp32 FLOPs per cycle per core) from CPU flags."""
    for flag, name, per_cycle in SIMD_LEVELS:
        if flag in flags and (flag != "avx2" or "fma" in flags):
            return name, per_cycle
    return "scalar", 2


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model name, flags, highest MHz, logical CPUs and physical cores from /proc/cpuinfo text."""
    flags: set[str] = set()
    mhz: list[float] = []
    cores: set[tuple[str, str]] = set()
    logical = 0
    model = ""
    phys = core = ""
    for line in text.splitlines() + [""]:
        key, _, value = (s.strip() for s in line.partition(":"))
        if key == "processor":
            logical += 1
        elif key == "model name" and not model:
            model = value
        elif key in ("flags", "Features"):
            flags |= set(value.split())
        elif key == "cpu MHz":
            mhz.append(float(value))
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
        elif not key:  # end of a processor block
            if core:
                cores.add((phys, core))
            phys = core = ""
    return {"model": model, "flags": flags, "mhz": max(mhz) if mhz else None, "logical_cpus": logical,
            "physical_cores": len(cores) or logical}


def allowed_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_peak(cpuinfo: str | None = None) -> dict[str, Any]:
    """The machine section of a benchmark result: CPU, clock, SIMD level and the estimated peak."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    info = parse_cpuinfo(cpuinfo)
    simd, per_cycle = flops_per_cycle(info["flags"])
    mhz = _max_mhz() or info["mhz"]
    allowed = allowed_cpus()
    cores = max(1, min(info["physical_cores"] or allowed, allowed))
    peak = cores * (mhz / 1e3) * per_cycle if mhz else None
    override = os.environ.get("MODELKIT_PEAK_GFLOPS")
    return {"cpu": info["model"] or platform.processor() or platform.machine(), "logical_cpus": allowed,
            "physical_cores": cores, "clock_mhz": mhz, "simd": simd, "flops_per_cycle": per_cycle,
            "peak_gflops": float(override) if override else peak,
            "peak_source": "MODELKIT_PEAK_GFLOPS" if override else "estimate", "formula": FORMULA,
            "platform": platform.platform(), "python": platform.python_version()}


def _max_mhz() -> float | None:
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e3
    except (OSError, ValueError):
        return None


def achieved(flops: int | None, latency_s: float | None,
             peak_gflops: float | None) -> tuple[float | None, float | None]:
    """(achieved GFLOP/s, fraction of peak) of one call of `flops` taking `latency_s`."""
    if not flops or not latency_s:
        return None, None
    gflops = flops / latency_s / 1e9
    return gflops, (gflops / peak_gflops if peak_gflops else None)
