"""VADProcessor: speech start/stop timing on known audio, pre-roll and silence gating."""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
from collections.abc import Callable
from functools import cache
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pytest
import soxr

from aybiza.pipeline.context import CallContext
from aybiza.pipeline.frames import (
    DTMF,
    AgentSpeaking,
    EndOfCall,
    Frame,
    InputAudio,
    SpeechStarted,
    SpeechStopped,
)
from aybiza.processors.vad import VADProcessor

RATE = 8000
FRAME = 160  # 20 ms at 8 kHz
PAD_S = 1.0

Audio = npt.NDArray[np.int16]
F = TypeVar("F", bound=Frame)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


SENTENCE = "Hello, I would like to check my account balance please."


@cache
def spoken(text: str = SENTENCE) -> tuple[Audio, float, float]:
    """espeak-ng speech at 8 kHz padded with 1 s silence each side; (samples, onset s, offset s)."""
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "165", "--stdout", text], check=True, capture_output=True
    ).stdout
    # espeak-ng writes a 44-byte RIFF header then 22050 Hz PCM16 mono.
    speech = np.frombuffer(wav[44:], dtype="<i2").astype(np.float32)
    speech = soxr.resample(speech, 22050, RATE)
    loud = np.flatnonzero(np.abs(speech) > 300)
    speech = speech[loud[0] : loud[-1] + 1]
    pad = np.zeros(int(PAD_S * RATE), dtype=np.float32)
    audio = np.concatenate([pad, speech, pad]).clip(-32768, 32767).astype("<i2")
    return audio, PAD_S, PAD_S + len(speech) / RATE


class Sink:
    """Collects what the processor pushes."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    async def __call__(self, frame: Frame) -> None:
        self.frames.append(frame)

    def of(self, kind: type[F]) -> list[F]:
        return [f for f in self.frames if isinstance(f, kind)]


async def run(vad: VADProcessor, audio: Audio, frame_samples: int = FRAME, t0: float = 100.0,
              arrival: Callable[[float], float] = lambda at: at) -> Sink:
    """Feed ``audio`` frame by frame; ``arrival`` maps a frame's place in the stream to the time it arrives."""
    sink = Sink()
    vad.push = sink
    ctx = CallContext(call_id="test")
    await vad.start(ctx, None)  # type: ignore[arg-type]  # an inline processor spawns no task
    pcm = audio.tobytes()
    step = frame_samples * 2
    for i in range(0, len(pcm) - step + 1, step):
        await vad.process(InputAudio(pcm[i : i + step], RATE, arrival(t0 + i / 2 / RATE)))
    await vad.stop()
    return sink


@needs_espeak
@pytest.mark.anyio
async def test_speech_start_and_stop_follow_the_spoken_audio() -> None:
    audio, onset, offset = spoken()
    t0 = 100.0
    vad = VADProcessor(stop_ms=400)
    sink = await run(vad, audio, t0=t0)
    starts = sink.of(SpeechStarted)
    stops = sink.of(SpeechStopped)
    assert len(starts) == 1, "pauses between words must not split the utterance"
    assert len(stops) == 1
    assert abs(starts[0].at - (t0 + onset)) <= 0.1
    assert abs(stops[0].at - (t0 + offset)) <= 0.1
    stop_index = sink.frames.index(stops[0])
    last_audio = [f for f in sink.frames[:stop_index] if isinstance(f, InputAudio)][-1]
    # SpeechStopped comes after stop_ms of non-voiced audio, not before.
    assert last_audio.captured_at + last_audio.duration - stops[0].at == pytest.approx(0.4, abs=0.03)
    assert not vad.speaking


@needs_espeak
@pytest.mark.anyio
async def test_preroll_is_forwarded_before_the_first_voiced_frame() -> None:
    audio, _, _ = spoken()
    sink = await run(VADProcessor(preroll_ms=200), audio)
    started = sink.of(SpeechStarted)[0]
    assert sink.frames[0] is started, "SpeechStarted comes before the audio it announces"
    first = sink.frames[1]
    assert isinstance(first, InputAudio) and first.voiced is True
    assert started.at - first.captured_at == pytest.approx(0.2, abs=0.021)
    # Forwarded audio stays in capture order, with no gaps inside the segment.
    forwarded = sink.of(InputAudio)
    times = [f.captured_at for f in forwarded]
    assert np.allclose(np.diff(times), 0.02)


@needs_espeak
@pytest.mark.anyio
async def test_the_preroll_is_the_same_audio_when_frames_arrive_in_bursts() -> None:
    audio, _, _ = spoken()
    paced = await run(VADProcessor(preroll_ms=200), audio)
    # network jitter: frames held up and delivered 200 ms at a time, all with the arrival time of the burst
    bursty = await run(VADProcessor(preroll_ms=200), audio, arrival=lambda at: math.ceil(at * 5) / 5)
    assert [f.pcm for f in paced.of(InputAudio)] == [f.pcm for f in bursty.of(InputAudio)]


@needs_espeak
@pytest.mark.anyio
async def test_silence_is_gated_and_counted() -> None:
    audio, onset, offset = spoken()
    vad = VADProcessor(preroll_ms=200, stop_ms=400)
    sink = await run(vad, audio)
    ctx = vad.ctx
    assert ctx is not None
    total = len(audio) / RATE
    forwarded = sum(f.duration for f in sink.of(InputAudio))
    ledger = ctx.ledger
    assert ledger.audio_seconds == pytest.approx(total, abs=0.021)
    assert ledger.gated_seconds == pytest.approx(ledger.audio_seconds - forwarded, abs=1e-6)
    # Most of the 2 s of padding never reaches STT; the speech itself does.
    assert ledger.gated_seconds > 2 * PAD_S - 0.2 - 0.4 - 0.2
    usage = ledger.usage()
    assert (usage.audio_seconds, usage.gated_seconds) == (round(ledger.audio_seconds, 3),
                                                          round(ledger.gated_seconds, 3))
    assert forwarded >= offset - onset


@pytest.mark.anyio
async def test_pure_silence_forwards_nothing_and_gate_off_forwards_everything() -> None:
    silence = np.zeros(RATE, dtype="<i2")
    gated = await run(VADProcessor(), silence)
    assert gated.frames == []
    open_gate = await run(VADProcessor(gate=False), silence)
    audio = open_gate.of(InputAudio)
    assert len(audio) == 50 and all(f.voiced is False for f in audio)


@needs_espeak
@pytest.mark.anyio
async def test_odd_frame_sizes_are_rechunked() -> None:
    audio, onset, _ = spoken()
    sink = await run(VADProcessor(), audio, frame_samples=100, t0=0.0)  # 12.5 ms frames
    starts = sink.of(SpeechStarted)
    assert len(starts) == 1 and abs(starts[0].at - onset) <= 0.1
    assert {len(f.pcm) for f in sink.of(InputAudio)} == {FRAME * 2}


@pytest.mark.anyio
async def test_other_frames_pass_unchanged_and_end_of_call_closes_speech() -> None:
    sink = Sink()
    vad = VADProcessor(classifier=lambda pcm, rate: True, start_ms=40)
    vad.push = sink
    loud = b"\x00\x10" * FRAME
    digit = DTMF("5")
    await vad.process(digit)
    for i in range(3):
        await vad.process(InputAudio(loud, RATE, 10 + i * 0.02))
    assert vad.speaking
    end = EndOfCall("hangup")
    await vad.process(end)
    assert sink.frames[0] is digit
    assert sink.frames[-1] is end
    assert isinstance(sink.frames[-2], SpeechStopped)
    assert sink.frames[-2].at == pytest.approx(10.06)
    assert not vad.speaking


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        VADProcessor(aggressiveness=4)
    with pytest.raises(ValueError):
        VADProcessor(stop_ms=-1)


def noise(seconds: float, rms: float, seed: int = 5) -> Audio:
    rng = np.random.default_rng(seed)
    return np.asarray(rng.standard_normal(int(seconds * RATE)) * rms, dtype=np.float64)


@pytest.mark.anyio
async def test_steady_noise_alone_is_not_speech() -> None:
    hiss = noise(3.0, 600.0).clip(-32768, 32767).astype("<i2")
    vad = VADProcessor()
    sink = await run(vad, hiss)
    assert sink.of(SpeechStarted) == []
    assert vad.ctx is not None and vad.ctx.ledger.gated_seconds == pytest.approx(3.0, abs=0.03)


@needs_espeak
@pytest.mark.anyio
async def test_speech_in_noise_is_found_once() -> None:
    audio, onset, offset = spoken()
    speech_rms = float(np.sqrt(np.mean(audio[int(onset * RATE) : int(offset * RATE)].astype(np.float64) ** 2)))
    noisy = (audio + noise(audio.size / RATE, speech_rms / 10 ** (15 / 20))).clip(-32768, 32767).astype("<i2")
    sink = await run(VADProcessor(), noisy, t0=0.0)
    starts = sink.of(SpeechStarted)
    assert len(starts) == 1 and abs(starts[0].at - onset) <= 0.1
    assert len(sink.of(SpeechStopped)) == 1


@needs_espeak
@pytest.mark.anyio
async def test_silero_detector_finds_the_same_speech() -> None:
    pytest.importorskip("onnxruntime")
    if importlib.util.find_spec("silero_vad") is None:
        pytest.skip("silero-vad (model package) not installed")
    audio, onset, offset = spoken()
    sink = await run(VADProcessor(detector="silero"), audio, t0=0.0)
    starts, stops = sink.of(SpeechStarted), sink.of(SpeechStopped)
    assert len(starts) == 1 and abs(starts[0].at - onset) <= 0.15
    assert len(stops) == 1 and abs(stops[0].at - offset) <= 0.15


@pytest.mark.anyio
async def test_hangover_forwards_a_tail_after_speech_stopped_at_16khz() -> None:
    verdicts = iter([True] * 5 + [False] * 40)
    vad = VADProcessor(classifier=lambda pcm, rate: next(verdicts), start_ms=60, stop_ms=100, hangover_ms=100)
    sink = Sink()
    vad.push = sink
    for i in range(45):
        await vad.process(InputAudio(bytes(640), 16000, i * 0.02))
    stop = sink.of(SpeechStopped)[0]
    assert stop.at == pytest.approx(0.1)
    after = sink.frames[sink.frames.index(stop) + 1 :]
    assert len(after) == 5 and all(isinstance(f, InputAudio) and f.voiced for f in after)


@pytest.mark.anyio
async def test_while_the_agent_speaks_a_click_is_not_speech_but_a_longer_sound_is() -> None:
    verdicts = iter([True] * 4 + [False] * 30 + [True] * 6)  # 80 ms click, silence, 120 ms of speech
    vad = VADProcessor(classifier=lambda pcm, rate: next(verdicts), start_ms=60, barge_in_start_ms=100,
                       stop_ms=100)
    sink = Sink()
    vad.push = sink
    steered: list[Frame] = []

    async def upstream(frame: Frame) -> None:
        steered.append(frame)

    vad.steer = upstream
    await vad.control(AgentSpeaking(True))
    for i in range(40):
        await vad.process(InputAudio(bytes(2 * FRAME), RATE, i * 0.02))
    [start] = sink.of(SpeechStarted)
    assert start.at == pytest.approx(34 * 0.02), "the click alone did not start speech"
    assert steered == [AgentSpeaking(True)], "AgentSpeaking goes on up"


@pytest.mark.anyio
async def test_when_the_agent_is_quiet_again_the_usual_start_applies() -> None:
    verdicts = iter([True] * 4)
    vad = VADProcessor(classifier=lambda pcm, rate: next(verdicts), start_ms=60, barge_in_start_ms=100)
    sink = Sink()
    vad.push = sink
    await vad.control(AgentSpeaking(True))
    await vad.control(AgentSpeaking(False))
    for i in range(4):
        await vad.process(InputAudio(bytes(2 * FRAME), RATE, i * 0.02))
    assert len(sink.of(SpeechStarted)) == 1


@pytest.mark.anyio
async def test_phone_audio_keeps_the_ulaw_it_arrived_as() -> None:
    verdicts = iter([False] * 5 + [True] * 5)
    vad = VADProcessor(classifier=lambda pcm, rate: next(verdicts), start_ms=40, preroll_ms=40)
    sink = Sink()
    vad.push = sink
    for i in range(10):
        await vad.process(InputAudio(bytes(2 * FRAME), RATE, i * 0.02, ulaw=bytes([i]) * FRAME))
    forwarded = sink.of(InputAudio)
    assert forwarded and all(f.ulaw == bytes([round(f.captured_at / 0.02)]) * FRAME for f in forwarded)
