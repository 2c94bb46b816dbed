"""Conversation like a person: interruptions that are not turns, and a watchdog that never leaves silence.

A real ``aybiza serve`` process, a Twilio-like caller over a real WebSocket,
the embedded stack; the caller's voice is espeak-ng (synthetic).
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import numpy as np
import pytest

from aybiza.codecs import lin2ulaw, ulaw2lin
from aybiza.processors.stt.whisper import WhisperRecognizer
from aybiza.testing.caller import Say, Wait, caller_speech, place_call

from .conftest import heard_pcm, words
from .server import AUTH_TOKEN, Server, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"AYBIZA_REPLY_TIMEOUT_S": "0.05", "AYBIZA_SILENCE_REPROMPT_S": "2.5", "AYBIZA_SILENCE_REPROMPTS": "1"}
    with running_server(tmp_path_factory.mktemp("conversation"), env) as running:
        yield running



def _click(seconds: float = 0.08) -> bytes:
    """A short knock on the line: broadband noise, loud, shorter than a barge-in."""
    rng = np.random.default_rng(5)
    pcm = (rng.normal(0, 6000, int(8000 * seconds))).clip(-32768, 32767).astype("<i2").tobytes()
    return lin2ulaw(pcm)


@pytest.mark.anyio
async def test_a_backchannel_over_the_agent_does_not_end_its_answer(
    server: Server, recognizer: WhisperRecognizer
) -> None:
    question, backchannel = caller_speech("what are your opening hours"), caller_speech("uh-huh")
    report = await place_call(server.stream_url, [Wait(20), Say(question), Say(backchannel, barge_in_after=0.8),
                                                   Wait(30)], auth_token=AUTH_TOKEN)
    if report.clears:  # it stopped the agent: it must go on within a second
        resumed = min((t for t in report.media_at if t > report.clears[0]), default=None)
        assert resumed is not None and resumed - report.clears[0] <= 1.0, "the agent did not go on within a second"
    heard = words(await anyio.to_thread.run_sync(recognizer.transcribe, heard_pcm(report), 8000))
    assert {"sundays", "holidays"} & heard, sorted(heard)  # the answer's last sentence was heard
    assert not {"catch", "quite"} & heard  # no "sorry, I didn't quite catch that"
    record = await server.record(report.call_sid)
    assert len([turn for turn in record["turns"] if turn["user"]]) == 1  # "uh-huh" was no turn


@pytest.mark.anyio
async def test_a_knock_on_the_line_while_the_agent_speaks_does_not_clear_it(server: Server) -> None:
    question = caller_speech("what are your opening hours")
    report = await place_call(server.stream_url, [Wait(20), Say(question), Say(_click(), barge_in_after=0.8),
                                                   Wait(30)], auth_token=AUTH_TOKEN)
    assert report.barge_in_started_at is not None
    assert not [t for t in report.clears if t >= report.barge_in_started_at], "a knock stopped the agent"


@pytest.mark.anyio
async def test_a_late_reply_gets_a_holding_line_and_a_silent_caller_a_reprompt_then_a_goodbye(
    server: Server, recognizer: WhisperRecognizer
) -> None:
    question = caller_speech("where can I park")
    report = await place_call(server.stream_url, [Wait(20), Say(question), Wait(30), Wait(20, until_idle=False)],
                              auth_token=AUTH_TOKEN, call_timeout=90)
    heard = words(await anyio.to_thread.run_sync(recognizer.transcribe, heard_pcm(report), 8000))
    assert "moment" in heard, sorted(heard)  # the reply took longer than 50 ms: the holding line
    assert "parking" in heard, sorted(heard)  # and then the answer
    assert {"still", "there"} <= heard, sorted(heard)  # the reprompt after 2.5 s of silence
    assert "goodbye" in heard, sorted(heard)
    record = await server.record(report.call_sid)
    assert record["outcome"] == "caller_silent"


def _under_noise(ulaw: bytes, snr_db: float) -> bytes:
    """The caller's words with white noise as loud as they are (0 dB) under them, as on a very bad line."""
    speech = np.frombuffer(ulaw2lin(ulaw), dtype="<i2").astype(np.float64)
    active = np.sqrt(np.mean(speech[np.abs(speech) > 300] ** 2))
    noise = np.random.default_rng(11).standard_normal(speech.size) * active / 10 ** (snr_db / 20)
    return lin2ulaw((speech + noise).clip(-32768, 32767).astype("<i2").tobytes())


@pytest.mark.anyio
async def test_a_question_under_0_db_noise_gets_the_bad_line_reprompt_not_a_confident_answer(
    server: Server, recognizer: WhisperRecognizer
) -> None:
    noisy = _under_noise(caller_speech("where are you located"), 0.0)
    report = await place_call(server.stream_url, [Wait(20), Say(noisy), Wait(30)], auth_token=AUTH_TOKEN)
    heard = words(await anyio.to_thread.run_sync(recognizer.transcribe, heard_pcm(report), 8000))
    assert {"quieter", "line"} & heard, sorted(heard)  # "the line is bad, could you move somewhere quieter"
    assert not {"visa", "mastercard", "cash"} & heard, sorted(heard)  # no confident wrong answer
