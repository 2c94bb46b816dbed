"""Failsafe renderings kept on disk: a restart reuses them; another voice, text or a damaged file renders again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aybiza.processors.tts.piper import PiperSynthesizer
from aybiza.session import FailsafeVoice
from aybiza.session.rendered_cache import RenderedCache

APOLOGY = "I'm sorry, we're having a technical problem on our side."


class Counting:
    """The real piper voice, counting what it is asked to say."""

    def __init__(self, inner: PiperSynthesizer) -> None:
        self.inner = inner
        self.name = inner.name
        self.identity = inner.identity
        self.asked: list[str] = []

    def synthesize(self, text: str, language: str) -> Iterator[tuple[bytes, int]]:
        self.asked.append(text)
        yield from self.inner.synthesize(text, language)


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    return PiperSynthesizer()


def test_a_restart_reuses_the_rendering_on_disk(tmp_path: Path, piper: PiperSynthesizer) -> None:
    first_voice, next_voice = Counting(piper), Counting(piper)
    pcm, rate = FailsafeVoice(first_voice, cache=RenderedCache(tmp_path)).render(APOLOGY)
    samples = np.frombuffer(pcm, dtype="<i2")
    assert rate == piper.sample_rate and 1.5 < len(samples) / rate < 10 and np.abs(samples).max() > 1000
    assert FailsafeVoice(next_voice, cache=RenderedCache(tmp_path)).render(APOLOGY) == (pcm, rate)  # next process
    assert (first_voice.asked, next_voice.asked) == ([APOLOGY], [])
    assert [p.suffix for p in tmp_path.iterdir()] == [".pcm"]  # no partial files left


def test_another_voice_or_text_or_pace_is_rendered_again(tmp_path: Path, piper: PiperSynthesizer) -> None:
    voice = Counting(piper)
    FailsafeVoice(voice, cache=RenderedCache(tmp_path)).render(APOLOGY)
    FailsafeVoice(voice, cache=RenderedCache(tmp_path)).render("Goodbye.")
    FailsafeVoice(voice, cache=RenderedCache(tmp_path)).render(APOLOGY, "en-GB")
    slower = Counting(PiperSynthesizer(length_scale=1.2))
    assert slower.identity != voice.identity
    FailsafeVoice(slower, cache=RenderedCache(tmp_path)).render(APOLOGY)
    assert voice.asked == [APOLOGY, "Goodbye.", APOLOGY] and slower.asked == [APOLOGY]
    assert len(list(tmp_path.glob("*.pcm"))) == 4


def test_a_voice_without_an_identity_is_never_cached(tmp_path: Path, piper: PiperSynthesizer) -> None:
    class Anonymous:
        name = "anonymous"

        def synthesize(self, text: str, language: str) -> Iterator[tuple[bytes, int]]:
            yield from piper.synthesize(text, language)

    FailsafeVoice(Anonymous(), cache=RenderedCache(tmp_path)).render(APOLOGY)
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage", "empty"])
def test_a_damaged_rendering_is_ignored_and_rendered_again(tmp_path: Path, piper: PiperSynthesizer,
                                                           damage: str, caplog: pytest.LogCaptureFixture) -> None:
    voice = Counting(piper)
    good = FailsafeVoice(voice, cache=RenderedCache(tmp_path)).render(APOLOGY)
    path = RenderedCache(tmp_path).path(voice.identity, APOLOGY, "en")
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) - 1001]
    elif damage == "flipped":
        data[len(data) // 2] ^= 0x40
    elif damage == "garbage":
        data = bytearray(np.random.default_rng(1).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    again = FailsafeVoice(voice, cache=RenderedCache(tmp_path)).render(APOLOGY)
    assert voice.asked == [APOLOGY, APOLOGY], "the damaged file is not played to a caller"
    assert again[1] == good[1] and abs(len(again[0]) - len(good[0])) < good[1]  # a fresh rendering of the same text
    assert "damaged rendering" in caplog.text
    assert RenderedCache(tmp_path).load(voice.identity, APOLOGY, "en") == again  # and it is sound again


def test_an_unwritable_cache_costs_time_not_the_rendering(tmp_path: Path, piper: PiperSynthesizer) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    voice = Counting(piper)
    pcm, rate = FailsafeVoice(voice, cache=RenderedCache(blocked / "failsafe")).render(APOLOGY)
    assert len(pcm) > rate and voice.asked == [APOLOGY]
