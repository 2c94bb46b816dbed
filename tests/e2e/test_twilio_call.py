"""A phone call end to end: real server process, real WebSocket, real speech models.

The caller behaves like Twilio (signed webhook, one-time token, 20 ms μ-law
frames at real-time pace, marks echoed on playback, ``clear`` honoured).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from aybiza.codecs import ulaw2lin
from aybiza.processors.stt.whisper import WhisperRecognizer
from aybiza.testing.caller import Press, Say, Wait, caller_speech, place_call
from aybiza.testing.twilio_caller import TwilioCallerProtocol, new_sid

from .conftest import heard_the_hours
from .server import AUTH_TOKEN, Server, SharedServers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(shared_servers: SharedServers) -> Server:
    """A server with the default settings, shared: these tests count nothing from zero."""
    return shared_servers.get()


@pytest.fixture(scope="module")
def recognizer() -> WhisperRecognizer:
    recognizer = WhisperRecognizer()
    recognizer.load()
    return recognizer


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


async def _record(server: Server, call_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5, headers=server.api) as client:
        response = await client.get(f"{server.http}/api/calls/{call_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_unsigned_twiml_request_is_refused(server: Server) -> None:
    response = httpx.post(f"{server.http}/twiml", data={"CallSid": new_sid("CA"), "From": "+15555550100"})
    assert response.status_code == 403
    assert "X-Twilio-Signature" in response.text


def test_twiml_signed_with_another_token_is_refused(server: Server) -> None:
    params = {"CallSid": new_sid("CA"), "AccountSid": new_sid("AC"), "From": "+15555550100"}
    signature = RequestValidator("not-the-token").compute_signature(f"{server.http}/twiml", params)
    response = httpx.post(f"{server.http}/twiml", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403


def test_signed_twiml_connects_a_stream_with_a_one_time_token(server: Server) -> None:
    params = {"CallSid": new_sid("CA"), "AccountSid": new_sid("AC"), "From": "+447700900123"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{server.http}/twiml", params)
    response = httpx.post(f"{server.http}/twiml", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    assert f'<Stream url="ws://127.0.0.1:{server.port}/twilio/stream">' in response.text
    assert '<Parameter name="call_token"' in response.text
    assert '<Parameter name="caller" value="+447700900123"' in response.text


@pytest.mark.anyio
async def test_stream_with_a_forged_token_is_closed_with_a_reason(server: Server) -> None:
    protocol = TwilioCallerProtocol(custom_parameters={"call_token": "forged"})
    logged = len(server.log())  # the server is shared: only what this test caused counts
    async with websockets.connect(server.stream_url) as ws:
        await ws.send(protocol.connected())
        await ws.send(protocol.start())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "token" in server.log()[logged:]


@pytest.mark.anyio
async def test_call_greets_answers_the_question_and_receives_dtmf(
    server: Server, recognizer: WhisperRecognizer, tmp_path: Path
) -> None:
    question = caller_speech("what are your opening hours")
    report = await place_call(
        server.stream_url, [Wait(20), Press("42"), Say(question), Wait(30)], auth_token=AUTH_TOKEN
    )
    assert report.close_code == 1000
    assert len(report.turns) == 1 and report.turns[0].latency is not None
    assert len(report.marks_played) >= 2  # greeting and answer each end with a mark
    heard = ulaw2lin(bytes(report.heard))
    (tmp_path / "heard.pcm").write_bytes(heard)
    transcript = await anyio.to_thread.run_sync(recognizer.transcribe, heard, 8000)
    words = _words(transcript)
    assert {"harbor", "dental"} & words, transcript  # the greeting
    assert heard_the_hours(words), transcript  # the opening-hours answer
    record = await _record(server, report.call_sid)
    assert (record["status"], record["outcome"], record["digits"]) == ("ended", "hangup", "42")
    assert any(stage == "voice_to_voice" for stage, _ in record["timings"])
    assert [turn["user"] for turn in record["turns"]] and record["turns"][0]["agent"]  # the transcript
    assert float(record["cost"]["total_usd"]) > 0  # Twilio minutes


@pytest.mark.anyio
async def test_speaking_over_the_agent_clears_its_audio_within_300_ms(server: Server) -> None:
    question = caller_speech("what are your opening hours")
    interruption = caller_speech("sorry, where are you located")
    report = await place_call(
        server.stream_url,
        [Wait(20), Say(question), Say(interruption, barge_in_after=0.6), Wait(30)],
        auth_token=AUTH_TOKEN,
    )
    assert report.barge_in_started_at is not None
    clears = [t for t in report.clears if t >= report.barge_in_started_at]
    assert clears, "no clear after the caller spoke over the agent"
    assert clears[0] - report.barge_in_started_at <= 0.3
    assert report.marks_cleared  # the interrupted answer's mark came back as cleared
    assert len(report.turns) == 2 and report.turns[1].latency is not None  # the barge-in was answered


@pytest.mark.anyio
async def test_a_call_fed_garbage_ends_alone_while_another_completes(server: Server) -> None:
    question = caller_speech("what are your opening hours")
    results: dict[str, object] = {}
    logged = len(server.log())  # the server is shared: only what this test caused counts

    async def good_call() -> None:
        results["good"] = await place_call(server.stream_url, [Wait(20), Say(question), Wait(30)],
                                           auth_token=AUTH_TOKEN)

    async def garbage_call() -> None:
        call_sid, account_sid = new_sid("CA"), new_sid("AC")
        params = {"CallSid": call_sid, "AccountSid": account_sid, "From": "+15555550199"}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{server.http}/twiml", params)
        async with httpx.AsyncClient() as client:
            twiml = (await client.post(f"{server.http}/twiml", data=params,
                                       headers={"X-Twilio-Signature": signature})).text
        token = re.search(r'name="call_token" value="([^"]+)"', twiml)
        assert token is not None
        protocol = TwilioCallerProtocol(custom_parameters={"call_token": token.group(1)}, call_sid=call_sid,
                                        account_sid=account_sid)
        async with websockets.connect(server.stream_url) as ws:
            await ws.send(protocol.connected())
            await ws.send(protocol.start())
            await anyio.sleep(1.0)
            await ws.send(json.dumps({"event": "media", "media": {"payload": "%%% not base64"}}))
            try:
                while True:
                    await ws.recv()
            except websockets.ConnectionClosed as closed:
                results["garbage_close"] = closed.rcvd.code if closed.rcvd else None

    async with anyio.create_task_group() as tg:
        tg.start_soon(good_call)
        tg.start_soon(garbage_call)
    assert results["garbage_close"] == 1008
    good = results["good"]
    assert good.close_code == 1000  # type: ignore[attr-defined]
    assert good.turns and good.turns[0].latency is not None  # type: ignore[attr-defined]
    assert "protocol_error" in server.log()[logged:]
