"""Framework overhead of the production providers: caller stops → first TTS audio, fakes answering instantly.

Drives DeepgramSTT → (final transcript → UserTurn) → BedrockLLM → DeepgramTTS
with the real deepgram-sdk and boto3 against the local fakes (which answer
with no model delay), so the time measured is ours: the SDKs, the sockets
and event-stream parsing, the thread hand-off of the Bedrock stream,
sentence splitting and the frame hops.

The clock starts when ``SpeechStopped`` is pushed (all caller audio already
sent, as it is after the VAD's silence window) and stops when the first
``OutputAudio`` leaves the TTS stage. Stages:

* ``stt``  SpeechStopped → final Transcript (Finalize round trip)
* ``llm``  UserTurn → first AgentText (ConverseStream request → first sentence)
* ``tts``  first AgentText → first OutputAudio (Speak round trip)

Usage: ``.venv/bin/python benchmarks/providers_overhead.py [--turns 40] [--json]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Literal

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
from aybiza.processors.llm.bedrock import BedrockLLM
from aybiza.processors.stt.deepgram import DeepgramSTT
from aybiza.processors.tts.deepgram import DeepgramTTS
from aybiza.testing import BedrockReply, FakeBedrock, FakeDeepgram


@dataclass
class Marks:
    """Monotonic timestamps of one turn."""

    stopped: float = 0.0
    final: float = 0.0
    first_text: float = 0.0
    first_audio: float = 0.0


@dataclass
class Clock:
    turns: list[Marks] = field(default_factory=list)

    @property
    def current(self) -> Marks:
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
    n = int(rate * 0.02)
    t = np.arange(n * int(seconds / 0.02)) / rate
    pcm = (np.sin(2 * math.pi * 220 * t) * 6000).astype("<i2").tobytes()
    return [pcm[i : i + 2 * n] for i in range(0, len(pcm), 2 * n)]


async def wait_for(predicate: object, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark turn did not complete")
        await anyio.sleep(0.0005)


async def run(turns: int, warmup: int, twilio: bool) -> Clock:
    rate = 8000 if twilio else 16000
    encoding: Literal["mulaw", "linear16"] = "mulaw" if twilio else "linear16"
    clock = Clock()
    with FakeBedrock(script=[BedrockReply(text="Certainly. Your table is booked for eight tonight.")]) as fb:
        async with FakeDeepgram(transcripts=["book me a table for eight tonight"], interim_every_s=0) as dg:
            stt = DeepgramSTT(api_key="test-key", base_url=dg.url, encoding=encoding)
            llm = BedrockLLM(
                region="us-east-1",
                model_id="us.anthropic.claude-haiku-4-5-20251001-v1:0",
                system_prompt="You are a booking agent.",
                endpoint_url=fb.url,
            )
            tts = DeepgramTTS(api_key="test-key", base_url=dg.url, encoding=encoding)
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
                    await wait_for(lambda target=target: len(dg.listens[0].audio) >= target)
                    clock.current.stopped = time.monotonic()
                    await p.push(SpeechStopped(at=clock.current.stopped))
                    await wait_for(lambda turn=turn: sink.done > turn)

            await pipeline.run(CallContext(call_id="bench", codec="pcmu" if twilio else "opus"), feed)
    clock.turns = clock.turns[warmup:]
    return clock


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p90_ms": 1000 * ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max_ms": 1000 * ordered[-1],
        "mean_ms": 1000 * statistics.fmean(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # Static credentials for the fake; never look for instance metadata.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    os.environ.setdefault(
        "AWS_CONFIG_FILE", os.path.join(tempfile.gettempdir(), "aybiza-bench-no-aws-config")
    )
    results = {}
    for name, twilio in (("twilio (mu-law 8 kHz)", True), ("webrtc (linear16 16 kHz)", False)):
        clock = anyio.run(run, args.turns, args.warmup, twilio)
        results[name] = {
            "total": summary([t.first_audio - t.stopped for t in clock.turns]),
            "stt": summary([t.final - t.stopped for t in clock.turns]),
            "llm": summary([t.first_text - t.final for t in clock.turns]),
            "tts": summary([t.first_audio - t.first_text for t in clock.turns]),
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"caller stopped -> first TTS audio, fakes answering instantly ({args.turns} turns each)")
    for name, stages in results.items():
        print(f"\n{name}")
        print(f"  {'stage':<6} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8}")
        for stage, s in stages.items():
            print(f"  {stage:<6} {s['p50_ms']:8.2f} {s['p90_ms']:8.2f} {s['max_ms']:8.2f}")


if __name__ == "__main__":
    main()
