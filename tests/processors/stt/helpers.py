"""Test helpers for the STT stages: telephone-band espeak speech, frame scripts, a collecting sink."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import anyio
import numpy as np
import pytest
import soxr
from anyio.abc import TaskGroup

from aybiza.pipeline.context import CallContext
from aybiza.pipeline.frames import Frame, InputAudio, SpeechStarted, SpeechStopped
from aybiza.pipeline.pipeline import Pipeline
from aybiza.pipeline.processor import Processor

__all__ = ["RATE", "needs_espeak", "telephone_speech", "utterance", "Collector", "run_stage"]

RATE = 8000
FRAME_BYTES = 2 * RATE // 50  # 20 ms of PCM16 at 8 kHz

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


@cache
def telephone_speech(text: str, words_per_minute: int = 150) -> bytes:
    """``text`` spoken by espeak-ng (en-us), downsampled to 8 kHz PCM16 like a phone line."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-s", str(words_per_minute), "-w", str(path), text],
            check=True,
            capture_output=True,
        )
        with wave.open(str(path)) as wav:
            rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return bytes(soxr.resample(samples, rate, RATE).astype("<i2").tobytes())


def audio_frames(pcm: bytes, sample_rate: int = RATE) -> list[InputAudio]:
    """``pcm`` cut into 20 ms voiced ``InputAudio`` frames."""
    step = 2 * sample_rate // 50
    return [
        InputAudio(pcm[i : i + step], sample_rate, time.monotonic(), voiced=True)
        for i in range(0, len(pcm), step)
    ]


def utterance(pcm: bytes, sample_rate: int = RATE, pre_roll: float = 0.1) -> list[Frame]:
    """What the VAD stage emits for one utterance: start, pre-roll + speech frames, stop."""
    silence = bytes(2 * int(pre_roll * sample_rate))
    frames: list[Frame] = [SpeechStarted(time.monotonic())]
    frames += audio_frames(silence + pcm, sample_rate)
    frames.append(SpeechStopped(time.monotonic()))
    return frames


class Collector(Processor):
    """The last stage of a test pipeline: keeps every frame it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process(self, frame: Frame) -> None:
        self.frames.append(frame)


async def run_stage(
    stage: Processor,
    frames: Iterable[Frame],
    until: Callable[[list[Frame], CallContext], bool],
    ctx: CallContext | None = None,
) -> tuple[list[Frame], CallContext]:
    """Run ``stage -> collector`` for one call: feed ``frames``, then wait (30 s at most) for ``until``."""
    sink = Collector()
    call = ctx if ctx is not None else CallContext(call_id="stt-test")

    async def feed(pipeline: Pipeline, tg: TaskGroup) -> None:
        for frame in frames:
            await pipeline.push(frame)
        with anyio.fail_after(30):
            # Polled: some conditions (usage counters) change without any frame arriving.
            while not until(sink.frames, call):  # noqa: ASYNC110
                await anyio.sleep(0.005)

    await Pipeline([stage, sink]).run(call, feed)
    return sink.frames, call
