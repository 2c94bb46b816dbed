"""Recording and redaction cost on the call path: µs per caller frame recorded, µs per turn redacted.

A recorder is fed a call as the transport would: a 20 ms caller frame every
tick (the clock moves 20 ms) and 100 ms of agent audio every fifth, written
to a real file in a temporary directory (the flush to disk included, about
once a second). The figure is the time per caller frame, p50 and p99, and the
mean (which spreads the flushes). Redaction is timed on turn-sized text with
and without personal data (card, phone, email), the way the journal redacts
each turn. Goals in ``benchmarks/budgets.toml``: a recorded frame must cost a
small fraction of the edge chain's budget (50 µs).

Run: ``.venv/bin/python -m benchmarks.recording [--quick]`` (prints the figures as JSON).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from aybiza.pipeline import CallLedger
from aybiza.recording.recorder import CallRecorder

__all__ = ["run"]

TEXTS = (
    "I would like to book a cleaning for next Tuesday afternoon if you have anything",
    "my card is 4111 1111 1111 1111 and you can call me back on (415) 555-0123 or ann.lee@example.com",
)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _frames(seconds: float) -> list[float]:
    clock = _Clock()
    caller = (np.random.default_rng(1).normal(0, 2000, 160)).astype(np.int16).tobytes()
    agent = (np.random.default_rng(2).normal(0, 2000, 800)).astype(np.int16).tobytes()
    timings: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        recorder = CallRecorder(Path(directory) / "call.wav", clock=clock)
        for index in range(int(seconds * 50)):
            clock.now += 0.02
            started = time.perf_counter()
            recorder.caller(caller, 8000, clock.now)
            if index % 5 == 0:
                recorder.agent(agent, 8000, clock.now)
            timings.append(time.perf_counter() - started)
        recorder.close(clock.now)
    return timings


def _redaction(rounds: int) -> dict[str, float]:
    ledger = CallLedger()
    ledger.pii = True
    ledger.secret("1234")
    result = {}
    for name, text in zip(("plain", "with_pii"), TEXTS, strict=True):
        started = time.perf_counter()
        for _ in range(rounds):
            ledger.redact(text)
        result[f"redact_{name}_us"] = round((time.perf_counter() - started) / rounds * 1e6, 2)
    return result


def run(quick: bool = False) -> dict[str, Any]:
    """Measure; returns the figures (µs)."""
    seconds = 120.0 if quick else 600.0
    timings = sorted(_frames(seconds))
    micro = [t * 1e6 for t in timings]
    return {
        "frame_us_p50": round(statistics.median(micro), 2),
        "frame_us_p99": round(micro[int(len(micro) * 0.99)], 2),
        "frame_us_mean": round(statistics.fmean(micro), 2),
        "call_seconds": seconds,
        **_redaction(2_000 if quick else 20_000),
    }


def main() -> None:
    """Command line: ``--quick`` for the short run."""
    parser = argparse.ArgumentParser(description="recording and redaction cost on the call path")
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=2))


if __name__ == "__main__":
    main()
