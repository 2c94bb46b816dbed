"""UtteranceBuffer and resampling: what the STT stages collect between speech start and stop."""

from __future__ import annotations

import numpy as np
import pytest

from aybiza.codecs import resample_samples
from aybiza.pipeline.frames import InputAudio
from aybiza.processors.stt.utterance import UtteranceBuffer


def frame(samples: int, rate: int = 8000, value: int = 1000) -> InputAudio:
    return InputAudio(np.full(samples, value, dtype="<i2").tobytes(), rate, 0.0, voiced=True)


def test_audio_outside_an_utterance_is_ignored() -> None:
    buffer = UtteranceBuffer()
    buffer.add(frame(160))
    buffer.start()
    buffer.add(frame(160))
    buffer.stop()
    buffer.add(frame(160))
    assert len(buffer.take()) == 320
    assert buffer.utterance_seconds == pytest.approx(0.02)


def test_take_clears_pending_but_keeps_the_utterance_length() -> None:
    buffer = UtteranceBuffer()
    buffer.start()
    for _ in range(5):
        buffer.add(frame(160))
    assert buffer.pending_seconds == pytest.approx(0.1)
    assert len(buffer.take()) == 5 * 320
    assert buffer.pending_seconds == 0
    buffer.add(frame(160))
    assert buffer.utterance_seconds == pytest.approx(0.12)


def test_a_long_utterance_stops_growing_at_the_cap() -> None:
    buffer = UtteranceBuffer(max_seconds=0.1)
    buffer.start()
    for _ in range(20):
        buffer.add(frame(160))
    assert buffer.full
    assert buffer.utterance_seconds == pytest.approx(0.1)
    assert len(buffer.take()) == 5 * 320


def test_a_frame_at_another_rate_is_resampled_into_the_utterance() -> None:
    buffer = UtteranceBuffer()
    buffer.start()
    buffer.add(frame(160, rate=8000))
    buffer.add(frame(320, rate=16000))
    assert buffer.sample_rate == 8000
    assert buffer.utterance_seconds == pytest.approx(0.04)


def test_a_new_utterance_starts_empty() -> None:
    buffer = UtteranceBuffer()
    buffer.start()
    buffer.add(frame(160))
    buffer.start()
    assert buffer.take() == b""
    assert buffer.utterance_seconds == 0


def test_resampling_to_16k_keeps_duration_and_level() -> None:
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype("<i2")
    out = resample_samples(tone.tobytes(), 8000, 16000)
    assert out.dtype == np.int16
    assert out.size == 16000
    assert np.abs(out[1000:-1000]).max() == pytest.approx(8000, rel=0.05)


def test_resampling_at_the_same_rate_is_a_no_op() -> None:
    pcm = np.arange(100, dtype="<i2").tobytes()
    assert resample_samples(pcm, 16000, 16000).tobytes() == pcm
