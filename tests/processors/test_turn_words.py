"""The words a turn cannot end on, and the end of turn reading them (the recogniser steers ``HeardSoFar``)."""

from __future__ import annotations

import anyio
import pytest

from aybiza.pipeline import Frame, HeardSoFar, InputAudio, Processor, SpeechStarted, SpeechStopped
from aybiza.processors.endpoint import PROFILES, EndOfTurnPolicy, EndOfTurnStage
from aybiza.processors.turn_words import ends_open
from aybiza.testing.kit import run_stage


def test_a_sentence_stopped_on_an_article_a_possessive_or_a_conjunction_is_open() -> None:
    assert ends_open("I'd like to book an appointment for the", "en")
    assert ends_open("can I change my", "en-GB")
    assert ends_open("¿A qué hora abren los", "es")
    assert ends_open("je voudrais un rendez-vous pour", "fr")


def test_a_finished_question_and_a_stranded_preposition_are_not() -> None:
    assert not ends_open("What are your opening hours?", "en")
    assert not ends_open("What can you help me with?", "en")  # English strands prepositions: left out on purpose
    assert not ends_open("", "en")
    assert not ends_open("the", "xx")  # a language without a list: the audio decides alone


def test_the_policy_waits_on_open_words_whatever_the_model_says() -> None:
    policy = EndOfTurnPolicy(PROFILES["balanced"])
    assert not policy.complete(0.99, 2.0, "I'd like to book an appointment for the", "en")
    assert policy.complete(0.99, 2.0, "I'd like to book an appointment for Tuesday", "en")
    assert policy.complete(0.99, 2.0)  # no words known: as before


class _Recogniser(Processor):
    """Steers ``text`` up as the words so far on every audio frame (as Deepgram's interims come while one speaks)."""

    name = "words"
    consumes = frozenset({InputAudio})
    steers = frozenset({HeardSoFar})

    def __init__(self, text: str, lag_s: float | None = 0.0) -> None:
        super().__init__()
        self.text, self.lag_s = text, lag_s  # lag_s: how far the words stop short of the audio (None: not said)

    async def process(self, frame: Frame) -> None:
        await self.push(frame)
        if isinstance(frame, InputAudio):
            upto = None if self.lag_s is None else frame.captured_at + frame.duration - self.lag_s
            await self.steer(HeardSoFar(self.text, "en", upto))


def _turn(now: float) -> list[Frame]:
    audio = [InputAudio(bytes(320), 8000, now - 0.4 + i * 0.02, True) for i in range(20)]
    return [SpeechStarted(now - 0.4), *audio, SpeechStopped(now)]


async def _events(stage: EndOfTurnStage, recogniser: _Recogniser, settle_s: float) -> list[type[Frame]]:
    recorder = await run_stage([stage, recogniser], _turn(anyio.current_time()), settle_s=settle_s)
    return [type(f) for f in recorder.frames if not isinstance(f, InputAudio)]


@pytest.mark.anyio
async def test_a_confident_model_still_waits_when_the_words_stop_on_the() -> None:
    sure = EndOfTurnStage(lambda pcm, rate: 0.99, "balanced")
    assert await _events(sure, _Recogniser("book an appointment for the"), 0.3) == [SpeechStarted]
    sure = EndOfTurnStage(lambda pcm, rate: 0.99, "balanced")
    assert await _events(sure, _Recogniser("what are your opening hours"), 0.3) == [
        SpeechStarted, SpeechStopped]


@pytest.mark.anyio
async def test_a_pause_the_words_leave_open_is_not_scored_by_the_model() -> None:
    """Its answer would change nothing: the inference (~46 ms of a core) is saved."""
    asked: list[int] = []

    def score(pcm: bytes, rate: int) -> float:
        asked.append(len(pcm))
        return 0.99

    assert await _events(EndOfTurnStage(score, "balanced"), _Recogniser("book an appointment for the"), 0.3) == [
        SpeechStarted]
    assert asked == []
    assert await _events(EndOfTurnStage(score, "balanced"), _Recogniser("book an appointment for Tuesday"), 0.3) == [
        SpeechStarted, SpeechStopped]
    assert len(asked) == 1


@pytest.mark.anyio
async def test_words_that_lag_the_audio_do_not_hold_a_turn() -> None:
    # an interim from half a second ago ("cancel my" while the caller has said "cancel my appointment")
    sure = EndOfTurnStage(lambda pcm, rate: 0.99, "balanced")
    assert await _events(sure, _Recogniser("cancel my", lag_s=0.5), 0.3) == [SpeechStarted, SpeechStopped]
    # words that say nothing of what they cover are taken as they are
    sure = EndOfTurnStage(lambda pcm, rate: 0.99, "balanced")
    assert await _events(sure, _Recogniser("cancel my", lag_s=None), 0.3) == [SpeechStarted]
