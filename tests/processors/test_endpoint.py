"""End of turn: the model's decisions on fixed recordings, and how the stage holds and releases speech stops."""

from __future__ import annotations

from functools import cache

import anyio
import pytest

from aybiza.codecs import ulaw2lin
from aybiza.pipeline import EndOfCall, Frame, InputAudio, SpeechStarted, SpeechStopped
from aybiza.processors.endpoint import PROFILES, EndOfTurnPolicy, EndOfTurnProfile, EndOfTurnStage, calibrated
from aybiza.processors.smart_turn import SmartTurnModel
from aybiza.testing.caller import caller_speech
from aybiza.testing.kit import check_conformance, run_stage


@cache
def _model() -> SmartTurnModel:
    model = SmartTurnModel()
    model.load()
    return model


@cache
def _phone(text: str) -> bytes:
    """``text`` spoken by espeak-ng (deterministic: a fixed recording) at 8 kHz μ-law, then 200 ms of silence."""
    return ulaw2lin(caller_speech(text)) + bytes(3200)


def test_the_model_hears_a_finished_question_as_the_end_of_a_turn() -> None:
    assert _model().probability(_phone("What are your opening hours?"), 8000) > 0.9


def test_the_model_hears_a_sentence_left_hanging_as_not_finished() -> None:
    assert _model().probability(_phone("I need to cancel my appointment because"), 8000) < 0.2


def test_the_fast_profile_ends_a_question_at_the_first_check_and_the_balanced_one_waits_on_a_hanging_sentence(
) -> None:
    finished = _model().calibrated_probability(_phone("What are your opening hours?"), 8000)
    hanging = _model().calibrated_probability(_phone("I need to cancel my appointment because"), 8000)
    assert EndOfTurnPolicy(PROFILES["fast"]).complete(finished, 1.2)
    assert not EndOfTurnPolicy(PROFILES["balanced"]).complete(hanging, 2.0)


def test_calibration_keeps_the_order_of_the_model_for_the_same_ending() -> None:
    assert calibrated(0.99, -8.0) > calibrated(0.6, -8.0) > calibrated(0.05, -8.0)
    assert calibrated(0.9, -15.0) > calibrated(0.9, 0.0)  # a fading end is more of an end


# -- the stage, with a scripted scorer ----------------------------------------------------------

_PROFILE = EndOfTurnProfile("test", stop_ms=100, threshold=0.6, max_silence_ms=400, short_speech_ms=0)


def _audio(at: float, seconds: float = 0.4) -> list[Frame]:
    return [InputAudio(bytes(320), 8000, at + i * 0.02, True) for i in range(round(seconds / 0.02))]


async def _released(frames: list[Frame], probability: float, *, settle_s: float = 0.0) -> tuple[list[Frame], float]:
    stage = EndOfTurnStage(lambda pcm, rate: probability, _PROFILE)
    started = anyio.current_time()
    recorder = await run_stage(stage, frames, settle_s=settle_s)
    events = [f for f in recorder.frames if not isinstance(f, InputAudio)]
    return events, (recorder.times[-1] - started if recorder.times else 0.0)


@pytest.mark.anyio
async def test_a_confident_model_releases_the_stop_at_once() -> None:
    now = anyio.current_time()
    events, _ = await _released([SpeechStarted(now), *_audio(now), SpeechStopped(now + 0.4)], 0.9, settle_s=0.1)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


@pytest.mark.anyio
async def test_an_unconvinced_model_holds_the_stop_until_the_silence_limit() -> None:
    now = anyio.current_time()
    stopped = SpeechStopped(now)
    events, _ = await _released([SpeechStarted(now - 0.4), *_audio(now - 0.4), stopped], 0.1, settle_s=0.2)
    assert [type(e) for e in events] == [SpeechStarted]  # still held 0.2 s later
    events, _ = await _released([SpeechStarted(now - 0.4), *_audio(now - 0.4), stopped], 0.1, settle_s=0.6)
    assert events[-1] == stopped


@pytest.mark.anyio
async def test_speech_after_a_pause_continues_the_same_turn() -> None:
    now = anyio.current_time()
    frames = [SpeechStarted(now), *_audio(now), SpeechStopped(now + 0.4), SpeechStarted(now + 0.6),
              *_audio(now + 0.6), SpeechStopped(now + 1.0)]
    events, _ = await _released(frames, 0.1, settle_s=0.05)
    assert [type(e) for e in events] == [SpeechStarted]  # one turn, its end still held


@pytest.mark.anyio
async def test_the_end_of_the_call_releases_a_held_stop() -> None:
    now = anyio.current_time()
    events, _ = await _released([SpeechStarted(now), *_audio(now), SpeechStopped(now), EndOfCall("hangup")], 0.1)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped, EndOfCall]


@pytest.mark.anyio
async def test_the_stage_keeps_the_processor_contract() -> None:
    await check_conformance(lambda: EndOfTurnStage(lambda pcm, rate: 1.0, "fast"))


def test_every_profile_waits_longer_when_the_model_is_unsure() -> None:
    for profile in PROFILES.values():
        assert profile.max_silence_ms > profile.stop_ms
    assert PROFILES["fast"].threshold <= PROFILES["balanced"].threshold <= PROFILES["patient"].threshold


