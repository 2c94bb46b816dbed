"""EspeakSynthesizer: other languages, voice choice, streaming, configuration errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from aybiza.errors import ConfigError
from aybiza.processors.tts.espeak import EspeakSynthesizer

from .helpers import needs_espeak, rms

pytestmark = needs_espeak


def test_espeak_speaks_german() -> None:
    chunks = list(
        EspeakSynthesizer().synthesize("Guten Tag, wir haben von neun bis fünf Uhr geöffnet.", "de-DE")
    )
    pcm = b"".join(data for data, _ in chunks)
    assert {rate for _, rate in chunks} == {22050}
    assert len(pcm) / 2 / 22050 >= 1.5
    assert rms(pcm) > 500


def test_long_text_streams_in_several_chunks() -> None:
    text = " ".join(["Das ist ein langer Satz, damit die Ausgabe in Stücken ankommt."] * 4)
    chunks = list(EspeakSynthesizer().synthesize(text, "de"))
    assert len(chunks) > 1
    assert all(len(data) % 2 == 0 for data, _ in chunks)


def test_text_that_looks_like_an_option_is_spoken() -> None:
    pcm = b"".join(data for data, _ in EspeakSynthesizer().synthesize("-v five degrees", "en"))
    assert len(pcm) / 2 / 22050 > 0.5


def child_pids() -> set[int]:
    """Processes this test process has started and not yet reaped (Linux /proc)."""
    pids: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        pids.update(int(pid) for pid in children.read_text().split())
    return pids


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_closing_early_ends_the_espeak_process() -> None:
    before = child_pids()
    chunks = EspeakSynthesizer().synthesize("Eins, zwei, drei, vier, fünf, sechs. " * 50, "de")
    assert len(next(chunks)[0]) > 0
    assert child_pids() - before  # espeak-ng is running (or exited, not yet reaped)
    chunks.close()  # what the processor does on barge-in
    assert child_pids() == before


def test_voice_choice_by_language_tag() -> None:
    espeak = EspeakSynthesizer()
    assert espeak.voice_for("en") == "en-us"
    assert espeak.voice_for("en-GB") == "en-gb"
    assert espeak.voice_for("de-AT") == "de"
    assert espeak.voice_for("fr-CA") == "fr-fr"
    assert espeak.voice_for("pt_BR") == "pt-br"
    assert espeak.voice_for("hu") == "hu"  # not in the map, but espeak-ng speaks it
    assert espeak.voice_for("xx-unknown") == "en-us"


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="espeak-ng"):
        EspeakSynthesizer(binary="espeak-ng-not-installed")
    with pytest.raises(ConfigError, match="no voice klingon-x"):
        EspeakSynthesizer({"en": "en-us", "tlh": "klingon-x"})
