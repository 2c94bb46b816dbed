"""Hop overhead: microseconds for a frame to move from one processor to the next.

A pipeline of N pass-through processors is driven with audio frames; the
cost per hop is (time per frame with N stages - time with 1 stage) / (N - 1),
so frame creation and the loop itself are not counted. Goal ≤ 3 µs
(``benchmarks/budgets.toml``): a hop should cost about a function call.

Run: ``.venv/bin/python -m benchmarks.hop [--quick]`` (prints the figures as JSON).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import anyio

from aybiza.pipeline import CallContext, InputAudio, Pipeline, Processor

__all__ = ["run"]


async def _time_per_frame(stages: int, frames: int) -> float:
    pipeline = Pipeline([Processor() for _ in range(stages)])
    frame = InputAudio(b"\x00" * 320, 8000, 0.0)
    result = 0.0

    async def feed(pipe: Pipeline, tg: Any) -> None:
        nonlocal result
        push = pipe.push
        for _ in range(1000):
            await push(frame)
        started = time.perf_counter()
        for _ in range(frames):
            await push(frame)
        result = (time.perf_counter() - started) / frames

    await pipeline.run(CallContext(call_id="bench"), feed)
    return result


def run(quick: bool = False) -> dict[str, Any]:
    """Measure the hop cost; returns the figures (µs)."""
    frames = 20_000 if quick else 100_000
    stages = 11
    samples = []
    for _ in range(5 if quick else 9):
        one = anyio.run(_time_per_frame, 1, frames)
        many = anyio.run(_time_per_frame, stages, frames)
        samples.append((many - one) / (stages - 1) * 1e6)
    result = {
        "hop_us_median": round(statistics.median(samples), 3),
        "hop_us_min": round(min(samples), 3),
        "hop_us_max": round(max(samples), 3),
        "stages": stages,
        "frames": frames,
    }
    return result


def main() -> None:
    """Command line: ``--quick`` for the short run."""
    parser = argparse.ArgumentParser(description="µs per processor hop")
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=2))


if __name__ == "__main__":
    main()
