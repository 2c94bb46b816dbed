"""FliteSynthesizer: English clause by clause, voices, configuration errors."""

from __future__ import annotations

import pytest

from aybiza.errors import ConfigError
from aybiza.processors.tts.flite import FliteSynthesizer

from .helpers import needs_flite, rms

pytestmark = needs_flite

SENTENCE = "Hello, we are open from nine to five."


@pytest.mark.parametrize(("voice", "rate"), [("slt", 16000), ("kal", 8000)])
def test_flite_speaks_english(voice: str, rate: int) -> None:
    chunks = list(FliteSynthesizer(voice).synthesize(SENTENCE, "en"))
    pcm = b"".join(data for data, _ in chunks)
    assert {r for _, r in chunks} == {rate}
    assert len(pcm) / 2 / rate >= 1.0
    assert rms(pcm) > 300


def test_each_clause_is_its_own_chunk() -> None:
    chunks = list(FliteSynthesizer().synthesize(SENTENCE, "en"))
    assert len(chunks) >= 2
    assert len(chunks[0][0]) < sum(len(data) for data, _ in chunks)


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="flite"):
        FliteSynthesizer(binary="flite-not-installed")
    with pytest.raises(ConfigError, match="no voice 'nobody'"):
        FliteSynthesizer("nobody")
    with pytest.raises(ConfigError, match="does not exist"):
        FliteSynthesizer("/nowhere/voice.flitevox")
