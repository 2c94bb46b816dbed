"""The failsafe voice: apologies rendered once by a local voice, then served from memory."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import anyio
import numpy as np
import pytest

from aybiza.processors.tts.espeak import EspeakSynthesizer
from aybiza.session import FailsafeVoice

pytestmark = pytest.mark.anyio

APOLOGY = "I'm sorry, we're having a technical problem on our side."


class Counting:
    """A voice engine that counts what it is asked to say (and says it with ``inner``, or a tone)."""

    def __init__(self, inner: EspeakSynthesizer | None = None, *, rates: tuple[int, ...] = (16000,)) -> None:
        self.inner = inner
        self.rates = rates
        self.name = inner.name if inner is not None else "tone"
        self.asked: list[tuple[str, str]] = []
        self.threads: list[str] = []

    def synthesize(self, text: str, language: str) -> Iterator[tuple[bytes, int]]:
        self.asked.append((text, language))
        self.threads.append(threading.current_thread().name)
        if self.inner is not None:
            yield from self.inner.synthesize(text, language)
            return
        for rate in self.rates:  # 100 ms of a loud tone at each rate
            samples = np.arange(rate // 10) / rate
            yield (np.sin(2 * np.pi * 440 * samples) * 8000).astype("<i2").tobytes(), rate


@pytest.fixture(scope="module")
def espeak() -> EspeakSynthesizer:
    return EspeakSynthesizer()


def test_espeak_renders_an_apology_once_and_reuses_it(espeak: EspeakSynthesizer) -> None:
    voice = Counting(espeak)
    failsafe = FailsafeVoice(voice)
    pcm, rate = failsafe.render(APOLOGY)
    samples = np.frombuffer(pcm, dtype="<i2")
    assert rate == 22050
    assert 1.5 < len(samples) / rate < 10  # a spoken sentence, not silence or a blip
    assert np.abs(samples).max() > 1000
    assert failsafe.render(APOLOGY) == (pcm, rate)
    assert failsafe.render("  I'm sorry,   we're having a technical\nproblem on our side. ") == (pcm, rate)
    assert voice.asked == [(APOLOGY, "en")]


def test_warm_renders_ahead_so_a_failure_needs_no_synthesis() -> None:
    voice = Counting()
    failsafe = FailsafeVoice(voice)
    failsafe.warm(APOLOGY, f"{APOLOGY} Please call us back in a few minutes. Goodbye.", language="en-GB")
    assert len(voice.asked) == 2
    failsafe.render(APOLOGY, "en-GB")
    assert len(voice.asked) == 2
    failsafe.render(APOLOGY, "en")  # another language is another rendering
    assert len(voice.asked) == 3


async def test_render_async_renders_off_the_loop_once_then_answers_at_once() -> None:
    voice = Counting()
    failsafe = FailsafeVoice(voice)
    loop_thread = threading.current_thread().name
    first = await failsafe.render_async(APOLOGY)
    assert voice.threads and voice.threads[0] != loop_thread  # synthesis never blocks the event loop
    assert await failsafe.render_async(APOLOGY) == first
    assert len(voice.asked) == 1


async def test_calls_needing_the_same_apology_at_once_share_one_rendering() -> None:
    voice = Counting()
    failsafe = FailsafeVoice(voice)
    heard: list[tuple[bytes, int]] = []

    async def one_call() -> None:
        heard.append(await failsafe.render_async(APOLOGY, "en-US"))

    async with anyio.create_task_group() as calls:  # a region failing fails many turns together
        for _ in range(20):
            calls.start_soon(one_call)
    assert len(heard) == 20 and len(set(heard)) == 1
    assert voice.asked == [(APOLOGY, "en-US")], "one synthesis, not one worker thread per call"


def test_other_languages_go_to_the_other_voice() -> None:
    english, other = Counting(), Counting()
    failsafe = FailsafeVoice(english, other)
    failsafe.render("Sorry.", "en-US")
    failsafe.render("Entschuldigung.", "de")
    failsafe.render("Désolé.", "fr_CA")
    assert english.asked == [("Sorry.", "en-US")]
    assert [language for _, language in other.asked] == ["de", "fr_CA"]
    alone = Counting()
    FailsafeVoice(alone).render("Entschuldigung.", "de")  # no other voice: the main one tries
    assert alone.asked == [("Entschuldigung.", "de")]


def test_chunks_at_another_rate_are_resampled_to_the_first() -> None:
    failsafe = FailsafeVoice(Counting(rates=(16000, 8000, 16000)))
    pcm, rate = failsafe.render("Sorry.")
    assert rate == 16000
    assert len(pcm) // 2 == pytest.approx(3 * 1600, abs=40)  # 300 ms at 16 kHz, whatever each chunk's rate


def test_the_rendered_texts_are_bounded_and_the_least_recently_used_goes_first() -> None:
    voice = Counting()
    failsafe = FailsafeVoice(voice)
    failsafe.render("text 0")
    for n in range(1, 200):
        failsafe.render(f"text {n}")
        failsafe.render("text 0")  # in use all along: kept
    asked = len(voice.asked)
    failsafe.render("text 0")
    failsafe.render("text 199")
    assert len(voice.asked) == asked
    failsafe.render("text 1")  # long unused: rendered again
    assert len(voice.asked) == asked + 1
