"""Soak: 100 concurrent calls for 10 minutes (1 minute with ``--quick``); does anything leak?

The scripted server (``benchmarks.scripted_server``: ``aybiza serve``'s app
on our real stages, the far side of the Deepgram and Bedrock SDKs scripted;
pinned to one core) takes ``calls`` concurrent callers (another process, the
other core) that speak, pause and hang up after a random 30-120 s (15-30 s
quick), each replaced at once by a new call, so the server sets up and tears
down hundreds of calls. A warm-up of short calls (hundreds in 12 s) first
takes the process to its working size; the server's RSS, open file
descriptors, asyncio tasks and threads are read with no call up after it
(``idle_start``) and after the soak's last call has hung up (``idle_end``),
with the number of objects the garbage collector tracks. Flat means no leak.
Frames the callers sent and frames the server took in (counted by the
:class:`~aybiza.testing.scripted.FrameClock` the bench server puts first in
every call) are compared (``dropped_frames``), and frame lateness is
measured throughout.

Run: ``.venv/bin/python -m benchmarks.soak [--quick]`` (prints the figures).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.loadgen import ProgressFn, run_scenario

__all__ = ["APP_MODULES", "call_path_objects", "growth", "run", "type_growth"]

IDLE_KEYS = ("rss_mb", "fds", "tasks", "threads", "gc_objects", "active_calls")


def growth(start: dict[str, Any], end: dict[str, Any]) -> dict[str, float]:
    """End minus start for RSS (MB), fds, tasks, threads and objects tracked by the garbage collector."""
    return {"rss_mb": round(end["rss_mb"] - start["rss_mb"], 2), "fds": end["fds"] - start["fds"],
            "tasks": end["tasks"] - start["tasks"], "threads": end["threads"] - start["threads"],
            "gc_objects": end.get("gc_objects", 0) - start.get("gc_objects", 0)}


# Classes of the call path: a leaked call leaves some of these behind. Thread-pool machinery is left out:
# idle worker threads come and go with background work (and each holds locks, queues and contexts).
APP_MODULES = ("aybiza.", "starlette.", "uvicorn.", "websockets.", "h11.", "anyio.", "asyncio.")
NOT_PER_CALL = ("anyio._backends._asyncio.WorkerThread",)


def call_path_objects(types: dict[str, int]) -> int:
    """How many tracked objects belong to the call path's classes (see ``APP_MODULES``)."""
    return sum(n for name, n in types.items() if name.startswith(APP_MODULES) and name not in NOT_PER_CALL)


def type_growth(start: dict[str, int], end: dict[str, int], top: int = 10) -> dict[str, int]:
    """The object types whose count grew most between two idle snapshots."""
    grown = {name: end.get(name, 0) - start.get(name, 0) for name in set(start) | set(end)}
    return dict(sorted(((k, v) for k, v in grown.items() if v > 0), key=lambda kv: -kv[1])[:top])


def _rss_slope_mb_per_min(timeline: list[dict[str, Any]]) -> float | None:
    """RSS trend while loaded (the first fifth, still ramping, left out)."""
    loaded = timeline[len(timeline) // 5 :]
    if len(loaded) < 3:
        return None
    t, rss = np.array([(p["t_s"], p["rss_mb"]) for p in loaded], dtype=np.float64).T
    return round(float(np.polyfit(t / 60, rss, 1)[0]), 3)


def run(quick: bool = False, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Soak the server."""
    params = {"calls": 100, "duration_s": 60.0 if quick else 600.0,
              "call_s": [15.0, 30.0] if quick else [30.0, 120.0], "warmup_s": 12.0, "sample_s": 2.0 if quick else 5.0}
    raw = run_scenario("soak", params, progress=progress)
    change = growth(raw["idle_start"], raw["idle_end"])
    start_types, end_types = raw["idle_start"].get("gc_types", {}), raw["idle_end"].get("gc_types", {})
    result: dict[str, Any] = {
        "quick": quick,
        "calls": raw["calls"],
        "duration_s": raw["duration_s"],
        "warmup_calls": raw["warmup_calls"],
        "calls_placed": raw["calls_placed"],
        "failed_calls": raw["failed_calls"],
        "failures_sample": raw["failures_sample"],
        "frames_sent": raw["frames_sent"],
        "frames_received": raw["frames_received"],
        "dropped_frames": raw["frames_sent"] - raw["frames_received"],
        "rss_growth_mb": change["rss_mb"],
        "rss_growth_kb_per_call": round(change["rss_mb"] * 1024 / max(1, raw["calls_placed"]), 2),
        "gc_objects_growth": change["gc_objects"],
        # Objects of the call path's classes outliving their call: the sharpest leak signal (RSS also moves
        # with native caches, all objects with the worker-thread pool).
        "call_objects_growth": (grown := call_path_objects(end_types) - call_path_objects(start_types)),
        "call_objects_growth_per_call": round(grown / max(1, raw["calls_placed"]), 3),
        "gc_types_growth": type_growth(start_types, end_types),
        "fds_growth": change["fds"],
        "tasks_growth": change["tasks"],
        "threads_growth": change["threads"],
        "rss_slope_mb_per_min_loaded": _rss_slope_mb_per_min(raw["timeline"]),
        "lateness_ms": raw["lateness_ms"],
        "lateness_ms_p99": raw["lateness_ms"].get("p99_ms"),
        "server_cpu_percent": raw["server_cpu_percent"],
        "server_waiting_for_cpu_percent": raw["server_waiting_for_cpu_percent"],
        "idle_start": {k: raw["idle_start"].get(k) for k in IDLE_KEYS},
        "idle_end": {k: raw["idle_end"].get(k) for k in IDLE_KEYS},
        "timeline": raw["timeline"],
        "machine_busy_percent_before": raw["machine_busy_percent_before"],
        "server_cpu": raw["server_cpu"],
        "callers_cpu": raw["callers_cpu"],
    }
    return result


def main() -> None:
    """Command line: ``--quick`` for the 1-minute run."""
    parser = argparse.ArgumentParser(description="soak: leaks and dropped frames")
    parser.add_argument("--quick", action="store_true")
    result = run(parser.parse_args().quick, progress=lambda f, text: print(f"{f:5.0%} {text}", file=sys.stderr))
    print(json.dumps({k: v for k, v in result.items() if k != "timeline"}, indent=2))


if __name__ == "__main__":
    main()
