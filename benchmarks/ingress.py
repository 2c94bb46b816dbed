"""Ingress: delay from a Twilio ``media`` message leaving the caller to its audio reaching our STT stage.

The server is ``aybiza serve``'s app on scripted providers
(``benchmarks.scripted_server --probe-ingress``), pinned to one core;
``calls`` concurrent callers in another process (pinned to the other core)
stream 20 ms μ-law frames at real-time pace, speaking and pausing, and hear
the agent's replies. Each frame therefore takes the real path: the socket,
uvicorn and the WebSocket protocol, :class:`~aybiza.transports.twilio.TwilioProtocol`
(JSON, checks, base64), the transport's pump, the edge stages (quality,
VAD) and into the STT stage. To see that moment, the bench server numbers
each call's inbound frames and puts a probe right in front of the STT stage
(it wraps ``SpeechStack.build``; see ``benchmarks.scripted_server``). Both
processes read the same monotonic clock, so a frame's delay is when the
probe saw it minus when the caller sent it. ``from_transport_stamp`` is the
part after the transport stamped the frame's arrival (``InputAudio.captured_at``,
once the message is parsed): the edge stages alone.

Audio the VAD holds back until speech is confirmed (the pre-roll and the
first ``start_ms``) is delayed on purpose; it is reported on its own
(``held_by_vad``), and the budget applies to audio forwarded as it arrives
(``live``). Frames the VAD gates away as silence never reach the STT stage
and are not in the figures.

Run: ``.venv/bin/python -m benchmarks.ingress [--quick]`` (prints the figures).
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
from benchmarks.stats import cdf_ms, percentiles_ms

__all__ = ["cdf_ms", "percentiles_ms", "run"]


def run(quick: bool = False, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Measure ingress delay through the scripted server; returns the figures."""
    params = {"calls": 50 if quick else 100, "seconds": 8.0 if quick else 30.0, "settle_s": 3.0}
    raw = run_scenario("ingress", params, probe_ingress=True, progress=progress)
    live, held = np.asarray(raw["live_s"]), np.asarray(raw["held_s"])
    live_figures = percentiles_ms(live)
    return {
        "quick": quick,
        "calls": raw["calls"],
        "seconds": raw["seconds"],
        "frames_sent": raw["frames_sent"],
        "frames_reaching_stt": int(live.size + held.size),
        "audio": raw["audio"],
        "ingress_ms_p50": live_figures["p50_ms"],
        "ingress_ms_p99": live_figures["p99_ms"],
        "live": live_figures,
        "held_by_vad": {**percentiles_ms(held), "share_of_frames": round(held.size / max(1, live.size + held.size), 4)},
        # The part after the transport stamped the frame (edge stages to the STT stage), without the socket,
        # the WebSocket and Twilio message parsing, and the wait for the event loop before them.
        "from_transport_stamp": percentiles_ms(raw["in_server_s"]),
        "failures_sample": raw["failures_sample"],
        "server_cpu": raw["server_cpu"],
        "callers_cpu": raw["callers_cpu"],
        "machine_busy_percent_before": raw["machine_busy_percent_before"],
        "cdf_ms": {"live (forwarded on arrival)": cdf_ms(live), "held by VAD (pre-roll, start)": cdf_ms(held)},
    }


def main() -> None:
    """Command line: ``--quick`` for the short run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    result = run(parser.parse_args().quick, progress=lambda f, text: print(f"{f:5.0%} {text}", file=sys.stderr))
    print(json.dumps({k: v for k, v in result.items() if k != "cdf_ms"}, indent=2))


if __name__ == "__main__":
    main()
