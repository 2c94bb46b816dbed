"""Our side of the production providers' wires: caller stops → first TTS audio, fakes answering instantly.

Drives our ``DeepgramSTT`` → (final transcript → UserTurn) → ``ReplyProcessor``
over ``BedrockStreamer`` → ``DeepgramTTS`` with the real deepgram-sdk and
boto3 against the local fakes (``aybiza.testing``: they speak the real wire
protocols and answer with no model delay), so the time measured is ours: the
SDKs, the sockets and event-stream parsing, the thread hand-off of the
Bedrock stream, sentence splitting and the frame hops.

The clock starts when ``SpeechStopped`` is pushed (all caller audio already
sent, as it is after the VAD's silence window) and stops when the first
``OutputAudio`` leaves the TTS stage. Stages:

* ``stt``  SpeechStopped → final Transcript (Finalize round trip)
* ``llm``  UserTurn → first AgentText (ConverseStream request → first sentence)
* ``tts``  first AgentText → first OutputAudio (Speak round trip)

Usage: ``.venv/bin/python -m benchmarks.providers_overhead [--turns 40] [--json]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import anyio
import numpy as np
from anyio.abc import TaskGroup

from aybiza.pipeline import (
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    InputAudio,
    OutputAudio,
    Pipeline,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    UserTurn,
)
from aybiza.processors.llm.bedrock import BedrockStreamer, bedrock_client
from aybiza.processors.llm.reply import ReplyProcessor
from aybiza.processors.stt.deepgram import DeepgramSTT, deepgram_client
from aybiza.processors.tts.deepgram import DeepgramTTS
from aybiza.testing import BedrockReply, FakeBedrock, FakeDeepgram

__all__ = ["run"]

MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
TRANSPORTS = (("twilio (mu-law 8 kHz)", True), ("webrtc (linear16 16 kHz)", False))


@dataclass
class Marks:
    """Monotonic timestamps of one turn."""

    stopped: float = 0.0
    final: float = 0.0
    first_text: float = 0.0
    first_audio: float = 0.0


@dataclass
class Clock:
    """The marks of every turn, the current one last."""

    turns: list[Marks] = field(default_factory=list)

    @property
    def current(self) -> Marks:
        """The turn being measured."""
        return self.turns[-1]


class Turns(Processor):
    """A final transcript after the caller stopped is the user's turn (what TurnTaker does)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.turn_id = 0

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, Transcript):
            if frame.final:
                self.clock.current.final = time.monotonic()
                self.turn_id += 1
                await self.push(UserTurn(frame.text, self.turn_id, frame.language, frame.speech_ended_at))
            return
        await self.push(frame)


class Probe(Processor):
    """Between LLM and TTS: marks the first sentence."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, AgentText) and not self.clock.current.first_text:
            self.clock.current.first_text = time.monotonic()
        await self.push(frame)


class Sink(Processor):
    """After TTS: marks the first audio and the end of the turn."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.done = 0

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, OutputAudio) and not self.clock.current.first_audio:
            self.clock.current.first_audio = time.monotonic()
        elif isinstance(frame, AgentTurnDone):
            self.done += 1


def speech(seconds: float, rate: int) -> list[bytes]:
    """A 220 Hz tone as 20 ms PCM16 frames (the fake transcribes by script, not by listening)."""
    n = int(rate * 0.02)
    t = np.arange(n * int(seconds / 0.02)) / rate
    pcm = (np.sin(2 * math.pi * 220 * t) * 6000).astype("<i2").tobytes()
    return [pcm[i : i + 2 * n] for i in range(0, len(pcm), 2 * n)]


async def wait_for(predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
    """Poll ``predicate`` every half millisecond (TimeoutError after ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark turn did not complete")
        await anyio.sleep(0.0005)


def _at_least(audio: bytes | bytearray, size: int) -> bool:
    return len(audio) >= size


def _done_after(sink: Sink, turn: int) -> bool:
    return sink.done > turn


async def measure(turns: int, warmup: int, twilio: bool) -> Clock:
    """``turns`` timed turns (after ``warmup`` untimed ones) through the three stages against the fakes."""
    rate = 8000 if twilio else 16000
    encoding: Literal["mulaw", "linear16"] = "mulaw" if twilio else "linear16"
    clock = Clock()
    with FakeBedrock(script=[BedrockReply(text="Certainly. Your table is booked for eight tonight.")]) as fb, \
            ThreadPoolExecutor(4, thread_name_prefix="bench-bedrock") as pool:
        async with FakeDeepgram(transcripts=["book me a table for eight tonight"], interim_every_s=0) as dg:
            client = deepgram_client("test-key", dg.url)
            stt = DeepgramSTT(client, encoding=encoding)
            streamer = BedrockStreamer(region="us-east-1", model_id=MODEL, client=bedrock_client("us-east-1", fb.url),
                                       pool=pool)
            llm = ReplyProcessor(streamer, system_prompt="You are a booking agent.")
            tts = DeepgramTTS(client, encoding=encoding)
            sink = Sink(clock)
            pipeline = Pipeline([stt, Turns(clock), llm, Probe(clock), tts, sink])
            frames = speech(0.6, rate)

            async def feed(p: Pipeline, tg: TaskGroup) -> None:
                await wait_for(lambda: stt.connections == 1 and tts.connections == 1)
                for turn in range(turns + warmup):
                    clock.turns.append(Marks())
                    received = len(dg.listens[0].audio)
                    await p.push(SpeechStarted(at=time.monotonic()))
                    for pcm in frames:
                        await p.push(InputAudio(pcm, rate, time.monotonic(), voiced=True))
                        await anyio.sleep(0.001)
                    sent = sum(len(f) for f in frames) // (2 if twilio else 1)
                    target = received + sent
                    await wait_for(partial(_at_least, dg.listens[0].audio, target))
                    clock.current.stopped = time.monotonic()
                    await p.push(SpeechStopped(at=clock.current.stopped))
                    await wait_for(partial(_done_after, sink, turn))

            await pipeline.run(CallContext(call_id="bench", codec="pcmu" if twilio else "opus"), feed)
    clock.turns = clock.turns[warmup:]
    return clock


def summary(values: list[float]) -> dict[str, float]:
    """p50, p90, max and mean of samples in seconds, in ms."""
    ordered = sorted(values)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 3),
        "p90_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3),
        "max_ms": round(1000 * ordered[-1], 3),
        "mean_ms": round(1000 * statistics.fmean(ordered), 3),
    }


@contextmanager
def _static_aws_credentials() -> Iterator[None]:
    """Static credentials for the fake, and never a look for instance metadata; the environment restored after."""
    values = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true",
              "AWS_CONFIG_FILE": os.path.join(tempfile.gettempdir(), "aybiza-bench-no-aws-config"),
              "AWS_SHARED_CREDENTIALS_FILE": os.path.join(tempfile.gettempdir(), "aybiza-bench-no-aws-credentials")}
    hidden = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK", "AWS_ENDPOINT_URL",
              "AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
    saved = {name: os.environ.get(name) for name in (*values, *hidden)}
    os.environ.update(values)
    for name in hidden:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run(quick: bool = False, turns: int | None = None, warmup: int = 3) -> dict[str, Any]:
    """Per transport and stage: p50/p90/max/mean ms of our side of the providers' wires."""
    turns = turns if turns is not None else (20 if quick else 40)
    results: dict[str, Any] = {"quick": quick, "turns": turns}
    with _static_aws_credentials():
        for name, twilio in TRANSPORTS:
            clock = anyio.run(measure, turns, warmup, twilio)
            results[name] = {
                "total": summary([t.first_audio - t.stopped for t in clock.turns]),
                "stt": summary([t.final - t.stopped for t in clock.turns]),
                "llm": summary([t.first_text - t.final for t in clock.turns]),
                "tts": summary([t.first_audio - t.first_text for t in clock.turns]),
            }
    twilio_total = results[TRANSPORTS[0][0]]["total"]
    results["total_p50_ms_twilio"] = twilio_total["p50_ms"]
    results["total_p90_ms_twilio"] = twilio_total["p90_ms"]
    return results


def main() -> None:
    """Command line: a table, or ``--json``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(turns=args.turns, warmup=args.warmup)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"caller stopped -> first TTS audio, fakes answering instantly ({args.turns} turns each)")
    for name, _ in TRANSPORTS:
        print(f"\n{name}")
        print(f"  {'stage':<6} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8}")
        for stage, figures in results[name].items():
            print(f"  {stage:<6} {figures['p50_ms']:8.2f} {figures['p90_ms']:8.2f} {figures['max_ms']:8.2f}")


if __name__ == "__main__":
    main()
