"""``aybiza transcribe`` and ``aybiza listen``: a user tries their own recording."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import pytest

from aybiza.cli import main
from aybiza.codecs import ulaw2lin
from aybiza.testing.caller import caller_speech


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A question, half a second of silence, another question, a second of silence: 8 kHz WAV (espeak-ng)."""
    pcm = (ulaw2lin(caller_speech("what are your opening hours")) + bytes(8000)
           + ulaw2lin(caller_speech("where can I park")) + bytes(16000))
    path = tmp_path_factory.mktemp("audio") / "questions.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(pcm)
    return path


def test_transcribe_prints_the_words(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transcribe", str(recording), "--language", "en", "--telephone"]) == 0
    words = set(re.findall(r"[a-z]+", capsys.readouterr().out.lower()))
    assert {"opening", "hours", "park"} <= words


def test_listen_prints_speech_turn_ends_quality_and_language(recording: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["listen", str(recording), "--end-of-turn", "silence"]) == 0
    out = capsys.readouterr().out
    segments = re.findall(r"^\s+([\d.]+) -\s+([\d.]+) s$", out, re.MULTILINE)
    assert len(segments) == 2, out
    assert len(re.findall(r"ms after speech, by silence", out)) == 2, out
    assert re.search(r"^\s+1 s\s+[\d.]+\s+(high|medium|low)$", out, re.MULTILINE), out
    assert "language: en" in out


def test_a_missing_file_is_said_plainly() -> None:
    with pytest.raises(SystemExit, match="no such file"):
        main(["transcribe", "/nonexistent.wav"])
