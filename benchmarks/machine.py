"""What a benchmark ran on: cores, CPU model, memory, OS, Python, numpy's BLAS, key library versions.

Figures mean little without the machine, so every report states it. The
load average at the start is recorded too: other work on the machine skews
every latency figure.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from pathlib import Path
from typing import Any

__all__ = ["cpu_busy_percent", "describe", "run_queue_wait_s", "summary_line", "wait_for_quiet"]

_PACKAGES = ("numpy", "anyio", "starlette", "uvicorn", "websockets", "webrtcvad-wheels", "uvloop")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "cpu MHz", "flags") and key not in info:
            info[key] = value.strip()
    return info


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _blas() -> dict[str, Any]:
    """numpy's BLAS/LAPACK as numpy reports it (name and version), and its thread setting."""
    out: dict[str, Any] = {"OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}
    try:
        import numpy as np

        config: Any = np.show_config(mode="dicts")
        dependencies: Any = config.get("Build Dependencies", {}) if isinstance(config, dict) else {}
        for kind in ("blas", "lapack"):
            entry = dependencies.get(kind, {})
            if entry:
                out[kind] = f"{entry.get('name', '?')} {entry.get('version', '')}".strip()
    except Exception as error:  # numpy missing or an old show_config: say so, don't fail the report
        out["error"] = f"{type(error).__name__}: {error}"
    return out


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_busy_percent(seconds: float = 1.0) -> float | None:
    """How busy all cores are over ``seconds`` (from ``/proc/stat``): other work skews every figure."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        total_a, idle_a = sample()
        time.sleep(seconds)
        total_b, idle_b = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total_b - total_a
    return round(100 * (1 - (idle_b - idle_a) / total), 1) if total else None


def describe() -> dict[str, Any]:
    """The machine and software a run happens on, as plain JSON values."""
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    return {
        "cpu_model": cpu.get("model name") or platform.processor() or platform.machine(),
        "cpu_mhz": float(cpu["cpu MHz"]) if "cpu MHz" in cpu else None,
        "cpu_flags": sorted(flags & {"avx", "avx2", "avx512f", "fma", "sse4_2"}),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gb": _memory_gb(),
        "arch": platform.machine(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "blas": _blas(),
        "packages": _versions(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "cpu_busy_percent_at_start": cpu_busy_percent(),
    }


def summary_line(machine: dict[str, Any]) -> str:
    """One line: ``2 cores (AMD EPYC), 23.5 GB, Debian 12, CPython 3.11.7, BLAS openblas 0.3.27``."""
    blas = machine.get("blas", {}).get("blas", "?")
    load = machine.get("load_average_at_start") or ["?"]
    end = machine.get("load_average_at_end")
    return (f"{machine.get('cores')} cores ({machine.get('cpu_model')}), {machine.get('memory_gb')} GB, "
            f"{machine.get('os')}, {machine.get('python')}, BLAS {blas}, "
            f"1-min load average {load[0]} at start" + (f", {end[0]} at end" if end else "")
            + (f"; cores {busy}% busy before the run" if (busy := machine.get("cpu_busy_percent_at_start"))
               is not None else ""))


def run_queue_wait_s(pid: int | str = "self") -> float:
    """Seconds the process's main thread (its event loop) was runnable but waiting for a CPU.

    From ``/proc/PID/schedstat``. Time spent waiting means something else had
    the core: the machine was not quiet, and latency taken meanwhile is
    pessimistic.
    """
    try:
        with open(f"/proc/{pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def wait_for_quiet(threshold_percent: float = 25.0, max_wait_s: float = 30.0) -> float | None:
    """Wait (up to ``max_wait_s``) until the cores are less than ``threshold_percent`` busy; return the last
    reading. Load suites call it first, so other work on a shared machine skews them less."""
    deadline = time.monotonic() + max_wait_s
    busy = cpu_busy_percent()
    while busy is not None and busy > threshold_percent and time.monotonic() < deadline:
        busy = cpu_busy_percent()
    return busy
