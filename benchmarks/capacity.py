"""Capacity: how many concurrent Twilio calls one server process on one core carries.

The server (``benchmarks.scripted_server``: ``aybiza serve``'s app, every
call on our real stages — transport, quality, VAD, Deepgram STT, turn-taker,
journal, Bedrock model stage, Deepgram TTS — with only the far side of the
Deepgram and Bedrock SDKs scripted) is pinned to one core;
the callers (``benchmarks.loadgen``: real WebSocket clients streaming 20 ms
μ-law frames at real-time pace, speaking and pausing, hearing the replies)
run in another process pinned to the other core. Calls are added in steps;
at each step, after a settling time, the server measures every inbound
frame's lateness (see :class:`~aybiza.testing.scripted.FrameClock`, which the
bench server puts first in every call) over a
window. Capacity is the largest step with p99 lateness <= 20 ms and no
failed call (the last two steps are bisected). RSS per call is the slope of
the server's RSS against the number of calls.

The callers' own lateness and CPU are reported with each step, and how long
each process waited for its core (``/proc/PID/schedstat``): when the
callers fall behind, or other work on the machine takes the server's core,
the figure is a floor (``client_bound``, ``contended_failing_steps``).

Run: ``.venv/bin/python -m benchmarks.capacity [--quick]`` (prints the figures).
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

__all__ = ["run", "rss_per_call_mb"]

LATENESS_P99_MS = 20.0


def rss_per_call_mb(steps: list[dict[str, Any]]) -> float | None:
    """Least-squares slope of server RSS (MB) against live calls, over the steps given."""
    points = [(s["calls"], s["rss_mb"]) for s in steps if s.get("calls")]
    if len({calls for calls, _ in points}) < 2:
        return None
    calls, rss = np.array(points, dtype=np.float64).T
    slope = float(np.polyfit(calls, rss, 1)[0])
    return round(slope, 3)


def cpu_ms_per_call_second(steps: list[dict[str, Any]]) -> float | None:
    """Server CPU milliseconds per second of one call: the slope of CPU use against live calls."""
    points = [(s["calls"], s["server_cpu_percent"] * 10) for s in steps if s.get("calls") and s["pass"]]
    if len({calls for calls, _ in points}) < 2:
        return None
    calls, cpu_ms = np.array(points, dtype=np.float64).T
    return round(float(np.polyfit(calls, cpu_ms, 1)[0]), 3)


def run(quick: bool = False, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Ramp calls until frame lateness breaks the limit."""
    params = {"start": 50, "step": 50, "max_calls": 600 if quick else 1000, "settle_s": 3.0 if quick else 5.0,
              "window_s": 5.0 if quick else 10.0, "refine": 2 if quick else 3, "lateness_p99_ms": LATENESS_P99_MS}
    raw = run_scenario("capacity", params, progress=progress)
    steps = raw["steps"]
    passing = [s for s in steps if s["pass"]]
    best = max(passing, key=lambda s: s["calls"]) if passing else None
    result: dict[str, Any] = {
        "quick": quick,
        "criterion": f"p99 inbound frame lateness <= {LATENESS_P99_MS:g} ms, no failed call",
        "max_calls": raw["max_calls"],
        "first_failing_calls": raw["first_failing_calls"],
        "rss_mb_per_call": rss_per_call_mb(steps),
        # Informational: what one call costs the server's core, and how many calls a whole core's time
        # would pay for; on a busy machine this shows what the lateness criterion cannot.
        "server_cpu_ms_per_call_second": (per_call := cpu_ms_per_call_second(steps)),
        "calls_per_core_by_cpu_time": round(1000 / per_call) if per_call else None,
        "idle_rss_mb": raw["idle_rss_mb"],
        "at_max": None if best is None else {k: v for k, v in best.items() if k != "lateness_cdf_ms"},
        # Steps that failed while the server's core was busy with other work: the capacity is then a floor.
        "contended_failing_steps": [s["calls"] for s in steps
                                    if not s["pass"] and s.get("server_waiting_for_cpu_percent", 0) > 10],
        "client_bound": any(s["client_send_lateness_p99_ms"] is not None and s["client_send_lateness_p99_ms"] > 10
                            and s["client_cpu_percent"] > 90 for s in steps if not s["pass"]),
        "machine_busy_percent_before": raw["machine_busy_percent_before"],
        "server_cpu": raw["server_cpu"],
        "callers_cpu": raw["callers_cpu"],
        "caller_audio": raw["audio"],
        "failures_sample": raw["failures_sample"],
        "steps": [{k: v for k, v in s.items() if k != "lateness_cdf_ms"} for s in steps],
        "curve": [{"calls": s["calls"], "p50_ms": s["lateness_ms"]["p50_ms"], "p99_ms": s["lateness_ms"]["p99_ms"],
                   "rss_mb": s["rss_mb"], "server_cpu_percent": s["server_cpu_percent"],
                   "server_waiting_for_cpu_percent": s.get("server_waiting_for_cpu_percent")}
                  for s in sorted(steps, key=lambda s: s["calls"])],
        "cdf_ms": {f"{s['calls']} calls": s["lateness_cdf_ms"] for s in sorted(steps, key=lambda s: s["calls"])
                   if s["lateness_cdf_ms"]},
    }
    return result


def main() -> None:
    """Command line: ``--quick`` for the short run."""
    parser = argparse.ArgumentParser(description="calls per core")
    parser.add_argument("--quick", action="store_true")
    result = run(parser.parse_args().quick, progress=lambda f, text: print(f"{f:5.0%} {text}", file=sys.stderr))
    print(json.dumps({k: v for k, v in result.items() if k not in ("cdf_ms", "steps")}, indent=2))


if __name__ == "__main__":
    main()
