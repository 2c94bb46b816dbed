"""Ingress: per-sample delay from a Twilio ``media`` message arriving to its audio reaching the STT stage.

In-process, at real-time pace: ``calls`` concurrent calls each get one
20 ms ``media`` message per period (JSON text exactly as Twilio sends it,
callers speaking and pausing). Each message goes through the real path:
:class:`~aybiza.transports.twilio.TwilioProtocol` (parse, checks, base64),
``ulaw2lin``, then the edge chain ``VAD -> quality`` to a probe standing in
for the STT stage. A message is stamped just before it is parsed; the probe
stamps the audio's arrival, and every sample of a frame shares its delay.

Audio the VAD holds back until speech is confirmed (the pre-roll and the
first ``start_ms``) is delayed on purpose; it is reported on its own
(``held_by_vad``), and the budget applies to audio forwarded as it arrives
(``live``). The socket and the web server are not in this figure: the turn
suite measures a frame's trip through a real socket (its ``ingress`` part).

Run: ``.venv/bin/python -m benchmarks.ingress [--quick]`` -> ``benchmarks/results/ingress.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio
import numpy as np

from aybiza.codecs import ulaw2lin
from aybiza.pipeline import CallContext, Frame, InputAudio, Pipeline, Processor
from aybiza.processors.quality import QualityProcessor
from aybiza.processors.vad import VADProcessor
from aybiza.testing.twilio_caller import new_sid
from aybiza.transports.twilio import Media, TwilioProtocol
from benchmarks.loadgen import TwilioMessages, caller_audio

__all__ = ["run", "percentiles_ms"]

RESULTS = Path(__file__).resolve().parent / "results"
FRAME_S = 0.02


def percentiles_ms(seconds: list[float] | np.ndarray[Any, Any], points: tuple[float, ...] = (50, 99, 99.9),
                   ) -> dict[str, float | None]:
    """``{"p50_ms": .., "p99_ms": .., "p99_9_ms": .., "mean_ms": .., "max_ms": ..}`` of samples in seconds."""
    values = np.asarray(seconds, dtype=np.float64) * 1000
    out: dict[str, float | None] = {}
    for q in points:
        out[f"p{q:g}_ms".replace(".", "_")] = round(float(np.percentile(values, q)), 3) if values.size else None
    out["mean_ms"] = round(float(values.mean()), 3) if values.size else None
    out["max_ms"] = round(float(values.max()), 3) if values.size else None
    return out


def cdf_ms(seconds: list[float] | np.ndarray[Any, Any]) -> list[float]:
    """101 points: the 0th..100th percentiles in ms (for CDF plots)."""
    values = np.asarray(seconds, dtype=np.float64) * 1000
    if not values.size:
        return []
    return [round(float(v), 4) for v in np.percentile(values, np.arange(101))]


class _STTProbe(Processor):
    """Stands where the STT stage stands: stamps caller audio as it arrives."""

    name = "stt-probe"

    def __init__(self, current: Callable[[], float], live: list[float], held: list[float]) -> None:
        super().__init__()
        self._current = current
        self._live = live
        self._held = held

    async def process(self, frame: Frame) -> None:
        if type(frame) is InputAudio:
            delay = time.monotonic() - frame.captured_at
            (self._live if frame.captured_at == self._current() else self._held).append(delay)
            return
        await self.push(frame)


class _Caller:
    """One call's message source: utterances with pauses, as Twilio JSON text."""

    def __init__(self, index: int, audio: Any, rng: np.random.Generator) -> None:
        self.messages = TwilioMessages(new_sid("MZ"), new_sid("CA"), new_sid("AC"), {})
        self.audio = audio
        self.rng = rng
        self.frames: list[str] = []
        self.utterance = index

    def next_message(self) -> str:
        if not self.frames:
            speech = self.audio.utterances[self.utterance % len(self.audio.utterances)]
            self.utterance += 1
            pause = int(self.rng.integers(40, 100))  # 0.8 to 2 s of silence
            start = int(self.rng.integers(0, len(self.audio.silence)))
            silence = [self.audio.silence[(start + i) % len(self.audio.silence)] for i in range(pause)]
            self.frames = list(speech) + silence
        return self.messages.media(self.frames.pop(0))


async def _measure(calls: int, seconds: float) -> dict[str, Any]:
    audio = caller_audio()
    rng = np.random.default_rng(7)
    live: list[float] = []
    held: list[float] = []
    parse_s: list[float] = []
    decode_s: list[float] = []
    edge_s: list[float] = []
    arrival = [0.0]

    def current() -> float:
        return arrival[0]

    callers = [_Caller(i, audio, rng) for i in range(calls)]
    protocols = []
    pipes = []
    async with anyio.create_task_group() as tg:
        for caller in callers:
            protocol = TwilioProtocol(check_token=lambda custom: True)
            protocol.receive(caller.messages.connected())
            protocol.receive(caller.messages.start())
            pipeline = Pipeline([VADProcessor(), QualityProcessor(), _STTProbe(current, live, held)])
            ctx = CallContext(call_id=caller.messages.call_sid)
            for processor in pipeline.processors:
                await processor.start(ctx, tg)
            protocols.append(protocol)
            pipes.append(pipeline)
        periods = int(seconds / FRAME_S)
        origin = time.monotonic()
        for period in range(periods):
            for caller, protocol, pipeline in zip(callers, protocols, pipes, strict=True):
                message = caller.next_message()
                arrived = time.monotonic()
                arrival[0] = arrived
                event = protocol.receive(message)[0]
                parsed = time.monotonic()
                assert isinstance(event, Media)
                pcm = ulaw2lin(event.payload)
                decoded = time.monotonic()
                await pipeline.push(InputAudio(pcm, 8000, arrived))
                parse_s.append(parsed - arrived)
                decode_s.append(decoded - parsed)
                edge_s.append(time.monotonic() - decoded)
            await anyio.sleep(max(0.0, origin + (period + 1) * FRAME_S - time.monotonic()))
        for pipeline in pipes:
            for processor in pipeline.processors:
                await processor.stop()
        tg.cancel_scope.cancel()
    everything = np.concatenate([np.asarray(live), np.asarray(held)])
    live_figures = percentiles_ms(live)
    return {
        "calls": calls,
        "seconds": seconds,
        "messages": calls * periods,
        "frames_reaching_stt": len(live) + len(held),
        "samples_per_frame": 160,
        "audio": audio.source,
        "ingress_ms_p50": live_figures["p50_ms"],
        "ingress_ms_p99": live_figures["p99_ms"],
        "live": live_figures,
        "held_by_vad": {**percentiles_ms(held), "share_of_samples": round(len(held) / max(1, everything.size), 4)},
        "all_samples": percentiles_ms(everything),
        "parts_us_mean": {
            "parse_twilio_json": round(float(np.mean(parse_s)) * 1e6, 2),
            "ulaw_decode": round(float(np.mean(decode_s)) * 1e6, 2),
            "vad_quality_to_stt": round(float(np.mean(edge_s)) * 1e6, 2),
        },
        "cdf_ms": {"live (forwarded on arrival)": cdf_ms(live), "held by VAD (pre-roll, start)": cdf_ms(held)},
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure ingress delay; writes ``benchmarks/results/ingress.json`` and returns the figures."""
    result = anyio.run(_measure, 50 if quick else 100, 8.0 if quick else 30.0)
    result["quick"] = quick
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ingress.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    """Command line: ``--quick`` for the short run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    result = run(parser.parse_args().quick)
    print(json.dumps({k: v for k, v in result.items() if k != "cdf_ms"}, indent=2))


if __name__ == "__main__":
    main()
