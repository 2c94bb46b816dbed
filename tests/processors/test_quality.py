"""QualityProcessor: scores that follow audible damage, the call tier and its boundaries."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache

import numpy as np
import numpy.typing as npt
import pytest
import soxr

from aybiza.pipeline.context import CallContext
from aybiza.pipeline.frames import DTMF, Frame, InputAudio, QualityReport
from aybiza.processors.quality import QualityMeter, QualityProcessor, tier_for

RATE = 8000
STEP = 160  # 20 ms
Audio = npt.NDArray[np.float64]

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


@cache
def speech() -> Audio:
    """Two sentences of espeak-ng speech at 8 kHz with pauses, around -20 dBFS, as floats."""
    parts: list[Audio] = [np.zeros(RATE // 2)]
    for text in ("Hello, I would like to check my account balance.", "My card was declined this morning."):
        wav = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", text], check=True, capture_output=True).stdout
        samples = np.frombuffer(wav[44:], dtype="<i2").astype(np.float64) / 32768
        parts += [np.asarray(soxr.resample(samples, 22050, RATE), dtype=np.float64), np.zeros(RATE // 2)]
    audio = np.concatenate(parts)
    return np.asarray(audio * 0.1 / np.sqrt(np.mean(audio[np.abs(audio) > 1e-3] ** 2)), dtype=np.float64)


def with_noise(audio: Audio, snr_db: float) -> Audio:
    rng = np.random.default_rng(7)
    active = np.sqrt(np.mean(audio[np.abs(audio) > 1e-3] ** 2))
    return np.asarray(audio + rng.standard_normal(audio.size) * active / 10 ** (snr_db / 20), dtype=np.float64)


def pcm(audio: Audio) -> bytes:
    return np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes()


class Sink:
    """Collects what the processor pushes."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    async def __call__(self, frame: Frame) -> None:
        self.frames.append(frame)


async def run(audio: Audio) -> tuple[CallContext, Sink, QualityProcessor]:
    processor = QualityProcessor()
    sink = Sink()
    processor.push = sink
    ctx = CallContext(call_id="q")
    await processor.start(ctx, None)  # type: ignore[arg-type]  # spawns no task
    data = pcm(audio)
    for i in range(0, len(data) - 2 * STEP + 1, 2 * STEP):
        await processor.process(InputAudio(data[i : i + 2 * STEP], RATE, i / 2 / RATE))
    return ctx, sink, processor


def call_score(audio: Audio) -> float:
    meter = QualityMeter()
    data = pcm(audio)
    for i in range(0, len(data) - 2 * STEP + 1, 2 * STEP):
        meter.feed(data[i : i + 2 * STEP], RATE)
    return meter.call_score


@pytest.mark.parametrize(
    ("score", "tier"),
    [(1.0, "high"), (0.81, "high"), (0.8, "medium"), (0.51, "medium"), (0.5, "low"), (0.0, "low")],
)
def test_tier_boundaries_follow_the_design(score: float, tier: str) -> None:
    assert tier_for(score) == tier


@needs_espeak
@pytest.mark.anyio
async def test_clean_speech_is_high_and_reported_every_second() -> None:
    ctx, sink, processor = await run(speech())
    reports = [f for f in sink.frames if isinstance(f, QualityReport)]
    seconds = speech().size / RATE
    assert len(reports) == int(seconds)
    assert ctx.quality_tier == "high"
    assert all(r.tier == "high" for r in reports)
    assert all(0.0 <= r.score <= 1.0 for r in reports)
    assert {"snr_db", "clipping", "dropouts", "bandwidth_hz", "speech_dbfs"} <= reports[-1].details.keys()
    # Audio is forwarded untouched and in order, each frame before any report it completes.
    audio = [f for f in sink.frames if isinstance(f, InputAudio)]
    assert b"".join(f.pcm for f in audio) == pcm(speech())[: len(audio) * 2 * STEP]
    assert isinstance(sink.frames[0], InputAudio)


@needs_espeak
@pytest.mark.anyio
async def test_heavy_noise_drops_the_call_to_the_low_tier() -> None:
    ctx, sink, _ = await run(with_noise(speech(), 3.0))
    assert ctx.quality_tier == "low" and ctx.quality_score < 0.5  # the call's score is kept beside its tier
    last = [f for f in sink.frames if isinstance(f, QualityReport)][-1]
    assert last.tier == "low" and last.details["snr_db"] < 10


@needs_espeak
def test_score_falls_as_the_damage_grows() -> None:
    clean = speech()
    noisy = [call_score(with_noise(clean, snr)) for snr in (30, 15, 5)]
    assert noisy[0] > noisy[1] > noisy[2]
    clipped = [call_score(np.clip(clean * gain, -0.99, 0.99)) for gain in (1, 4, 16)]
    assert clipped[0] > clipped[1] > clipped[2]
    lossy = clean.copy()
    rng = np.random.default_rng(3)
    for start in range(0, lossy.size, STEP):
        if rng.random() < 0.15:
            lossy[start : start + STEP] = 0
    assert call_score(lossy) < call_score(clean) - 0.2
    spectrum = np.fft.rfft(clean)
    spectrum[np.fft.rfftfreq(clean.size, 1 / RATE) > 1000] = 0
    muffled = np.fft.irfft(spectrum, clean.size)
    assert call_score(muffled) < call_score(clean) - 0.1


@needs_espeak
def test_windows_report_what_went_wrong() -> None:
    meter = QualityMeter()
    data = pcm(np.clip(speech() * 16, -0.99, 0.99))
    windows = [
        w for i in range(0, len(data) - 2 * STEP + 1, 2 * STEP) if (w := meter.feed(data[i : i + 2 * STEP], RATE))
    ]
    assert max(w.clipping for w in windows if w.speech) > 0.01


@pytest.mark.anyio
async def test_silence_and_other_frames_pass_through_without_changing_the_tier() -> None:
    processor = QualityProcessor()
    sink = Sink()
    processor.push = sink
    ctx = CallContext(call_id="q", quality_tier="high")
    await processor.start(ctx, None)  # type: ignore[arg-type]
    digit = DTMF("7")
    await processor.process(digit)
    for i in range(100):
        await processor.process(InputAudio(bytes(2 * STEP), RATE, i * 0.02))
    assert sink.frames[0] is digit
    assert ctx.quality_tier == "high"
    assert processor.meter.call_score == 1.0
