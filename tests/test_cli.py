"""``aybiza transcribe`` and ``aybiza listen``: a user tries their own recording."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import pytest

from aybiza.cli import main, stream_url
from aybiza.codecs import ulaw2lin
from aybiza.testing.caller import caller_speech
from aybiza.testing.processes import free_port


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


@pytest.mark.parametrize(("given", "stream"), [
    ("ws://127.0.0.1:8080/twilio/stream", "ws://127.0.0.1:8080/twilio/stream"),
    ("http://127.0.0.1:8090", "ws://127.0.0.1:8090/twilio/stream"),
    ("https://voice.example.com/", "wss://voice.example.com/twilio/stream"),
    ("localhost:8090", "ws://localhost:8090/twilio/stream"),
])
def test_call_takes_the_server_as_a_user_writes_it(given: str, stream: str) -> None:
    assert stream_url(given) == stream


def test_call_says_plainly_why_it_could_not_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """No server there: one line that says so and what to check, not a traceback."""
    with pytest.raises(SystemExit, match="give the server's address"):
        main(["call", "--url", "ftp://example.test", "--auth-token", "t", "--say", "hi"])
    port = free_port()
    with pytest.raises(SystemExit, match=rf"could not call ws://127.0.0.1:{port}/twilio/stream: ConnectError: .*"
                                         r"Its Twilio auth token and AYBIZA_PUBLIC_URL"):
        main(["call", "--url", f"http://127.0.0.1:{port}", "--auth-token", "t", "--say", "hi"])
