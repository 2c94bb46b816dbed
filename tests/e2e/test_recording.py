"""Call recording and PII redaction through a real server: a stereo WAV per call, on disk or in S3, paused for digits.

Servers run as ``aybiza serve`` runs them, on the production providers
pointed at the shipped fakes (Deepgram listens by script and speaks tones;
the fake Bedrock decides as a model would), with recordings going to moto's
S3 server or to the data directory. Each call is placed by the Twilio-like
caller over a real socket; the test then fetches the recording through
``GET /api/calls/{id}/recording`` and listens to it channel by channel.
"""

from __future__ import annotations

import io
import stat
import time
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from aybiza.codecs import ulaw2lin
from aybiza.testing.browser_caller import place_browser_call
from aybiza.testing.caller import Press, Say, Wait, caller_speech, place_call
from aybiza.testing.fake_bedrock import BedrockReply, BedrockRequest, FakeBedrock, ToolUseReply
from aybiza.testing.fake_deepgram import FakeDeepgram
from aybiza.testing.s3_server import S3_CREDENTIALS, S3Server

from .conftest import agents_dir, speech_seconds
from .server import AUTH_TOKEN, Server, running_server

pytestmark = pytest.mark.slow

BUCKET = "aybiza-call-recordings"
CARD = "4111 1111 1111 1111"
EMAIL = "ann.lee@example.com"
RATE = 8000


def model(request: BedrockRequest) -> BedrockReply:
    """The fake Claude: collects digits when asked about a balance; repeats back what the caller said otherwise."""
    results = request.tool_results()
    texts = request.texts()
    if results:
        digits = results[0]["content"][0]["json"].get("digits", "")
        return BedrockReply(text=f"Thank you. Account {' '.join(digits)} has a balance of forty two dollars.")
    if "broken" in texts[-1].lower():  # every region fails: the call ends with an apology
        return BedrockReply(status=500, error_type="InternalServerException", error_message="internal failure")
    if "balance" in texts[-1].lower():
        return BedrockReply(text="Sure.", tool_uses=(ToolUseReply("collect_digits", {
            "prompt": "Please type your account number, then press the hash key.", "max_digits": 8}),))
    return BedrockReply(text=f"I heard: {texts[-1]}")


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeDeepgram, FakeBedrock]]:
    with FakeDeepgram(transcripts=["hello"], seconds_per_char=0.06) as deepgram, FakeBedrock(script=model) as bedrock:
        yield deepgram, bedrock


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


def _env(deepgram: FakeDeepgram, bedrock: FakeBedrock) -> dict[str, str]:
    return {"AYBIZA_STT": "deepgram", "AYBIZA_LLM": "bedrock", "AYBIZA_TTS": "deepgram",
            "DEEPGRAM_API_KEY": "test-key", "AYBIZA_DEEPGRAM_URL": deepgram.url,
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock.url, "AYBIZA_HEALTH_PROBES": "false",
            "AYBIZA_LOG_LEVEL": "DEBUG", **S3_CREDENTIALS}


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory, fakes: tuple[FakeDeepgram, FakeBedrock],
              s3: S3Server) -> Iterator[Server]:
    """Agent ``rec`` records (``record: true``) into the bucket; the default agent does not record."""
    tmp = tmp_path_factory.mktemp("recording-s3")
    agents = agents_dir(tmp, rec={"record": True, "tools": [{"builtin": "collect_digits", "max_digits": 8}]})
    env = {**_env(*fakes), "AYBIZA_AGENTS_DIR": str(agents), "AYBIZA_RECORDING_S3_BUCKET": BUCKET,
           "AYBIZA_RECORDING_S3_PREFIX": "calls/", "AYBIZA_RECORDING_S3_ENDPOINT_URL": s3.url}
    with running_server(tmp, env) as running:
        yield running


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory, fakes: tuple[FakeDeepgram, FakeBedrock]) -> Iterator[Server]:
    """Every call recorded (``AYBIZA_RECORD_CALLS``) into the data directory."""
    tmp = tmp_path_factory.mktemp("recording-local")
    with running_server(tmp, {**_env(*fakes), "AYBIZA_RECORD_CALLS": "true"}) as running:
        yield running


async def _recording(server: Server, call_id: str, rate: int = RATE) -> tuple[np.ndarray, np.ndarray]:
    """The call's WAV from the API: (caller, agent) channels at ``rate``."""
    async with httpx.AsyncClient(timeout=10) as client:
        refused = await client.get(f"{server.http}/api/calls/{call_id}/recording")
        response = await client.get(f"{server.http}/api/calls/{call_id}/recording", headers=server.api)
        part = await client.get(f"{server.http}/api/calls/{call_id}/recording",
                                headers={**server.api, "Range": "bytes=44-1043"})  # a player seeking
    assert refused.status_code == 401
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert part.status_code == 206 and part.content == response.content[44:1044]
    assert part.headers["content-range"] == f"bytes 44-1043/{len(response.content)}"
    with wave.open(io.BytesIO(response.content), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, rate)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    return frames[:, 0], frames[:, 1]


def _loud(channel: np.ndarray, rate: int = RATE) -> np.ndarray:
    """Per 20 ms window: louder than -40 dBFS."""
    size = rate // 50
    count = len(channel) // size
    windows = channel[: count * size].astype(np.float32).reshape(count, size)
    return np.asarray(np.sqrt((windows ** 2).mean(axis=1)) > 327.68)


def _spans(loud: np.ndarray) -> list[tuple[float, float]]:
    """Loud stretches in seconds (gaps under 0.3 s joined)."""
    spans: list[list[float]] = []
    for index in np.flatnonzero(loud):
        at = index * 0.02
        if spans and at - spans[-1][1] < 0.3:
            spans[-1][1] = at + 0.02
        else:
            spans.append([at, at + 0.02])
    return [(start, end) for start, end in spans]


async def _call(server: Server, script: list[Any], agent: str | None) -> tuple[str, float]:
    started = time.monotonic()
    report = await place_call(server.stream_url, script, auth_token=AUTH_TOKEN, agent=agent)
    return report.call_sid, time.monotonic() - started


def _check_length(caller: np.ndarray, seconds: float, record: dict[str, Any]) -> None:
    """The WAV lasts as long as the call did on the server (±0.5 s), and never longer than the caller's whole call.

    The caller's own measure also holds the webhook and the connection before the call starts (seconds on a
    server's first call), so it bounds the length from above only.
    """
    length = len(caller) / RATE
    assert abs(length - (record["ended_at"] - record["started_at"])) <= 0.5, (length, record)
    assert abs(length - record["recording"]["duration_s"]) <= 0.05
    assert length <= seconds + 0.1, (length, seconds)


def _check_conversation(caller: np.ndarray, agent: np.ndarray, said: bytes, seconds: float,
                        record: dict[str, Any]) -> None:
    """Length matches the call; the greeting on the right first, then the caller on the left, then the reply."""
    _check_length(caller, seconds, record)
    caller_spans, agent_spans = _spans(_loud(caller)), _spans(_loud(agent))
    assert agent_spans and caller_spans, (agent_spans, caller_spans)
    greeting = agent_spans[0]
    assert greeting[0] < 1.5 and greeting[1] - greeting[0] == pytest.approx(26 * 0.06, abs=0.3)  # its tone
    spoken = caller_spans[0]
    assert spoken[0] > greeting[1]  # the caller waited for the greeting
    assert spoken[1] - spoken[0] == pytest.approx(speech_seconds(ulaw2lin(said)), abs=0.6)
    assert not _loud(caller)[int(greeting[0] * 50):int(greeting[1] * 50)].any()  # nobody else on the left
    assert any(start > spoken[1] for start, _ in agent_spans)  # the reply came after the caller spoke


@pytest.mark.anyio
async def test_a_recorded_call_is_a_stereo_wav_in_s3_with_each_side_in_its_channel(
    s3_server: Server, s3: S3Server, fakes: tuple[FakeDeepgram, FakeBedrock]
) -> None:
    deepgram, _ = fakes
    deepgram.rescript(["i would like to book a cleaning"])
    said = caller_speech("I would like to book a cleaning.")
    call_id, seconds = await _call(s3_server, [Wait(6), Say(said), Wait(10)], "rec")
    record = await s3_server.record(call_id)
    recording = record["recording"]
    assert recording["storage"] == "s3" and recording["key"] == f"calls/{call_id}.wav"
    assert recording["url"] == f"s3://{BUCKET}/calls/{call_id}.wav" and recording["channels"] == ["caller", "agent"]
    head = s3.client().head_object(Bucket=BUCKET, Key=recording["key"])
    assert head["ContentType"] == "audio/wav"
    assert head["ContentLength"] == 44 + round(recording["duration_s"] * RATE) * 4  # the WAV header and 2x16 bit
    caller, agent = await _recording(s3_server, call_id)
    _check_conversation(caller, agent, said, seconds, record)
    assert not list((s3_server.data_dir / "recordings").glob("*.wav"))  # uploaded, not kept


@pytest.mark.anyio
async def test_every_call_is_recorded_into_the_data_directory_when_the_server_records_calls(
    local_server: Server, fakes: tuple[FakeDeepgram, FakeBedrock]
) -> None:
    deepgram, _ = fakes
    deepgram.rescript(["what time do you open"])
    said = caller_speech("What time do you open?")
    call_id, seconds = await _call(local_server, [Wait(6), Say(said), Wait(10)], None)
    record = await local_server.record(call_id)
    assert record["recording"]["storage"] == "file" and record["recording"]["key"] == f"{call_id}.wav"
    path = local_server.data_dir / "recordings" / f"{call_id}.wav"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    caller, agent = await _recording(local_server, call_id)
    _check_conversation(caller, agent, said, seconds, record)


@pytest.mark.anyio
async def test_an_agent_that_does_not_record_leaves_no_recording(s3_server: Server) -> None:
    call_id, _ = await _call(s3_server, [Wait(4)], None)
    assert (await s3_server.record(call_id))["recording"] is None
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{s3_server.http}/api/calls/{call_id}/recording", headers=s3_server.api)
    assert response.status_code == 404


@pytest.mark.anyio
async def test_digit_collection_pauses_the_recording_and_the_transcript_masks_the_digits(
    s3_server: Server, fakes: tuple[FakeDeepgram, FakeBedrock]
) -> None:
    deepgram, bedrock = fakes
    deepgram.rescript(["i would like to check my balance"])
    call_id, _ = await _call(s3_server, [
        Wait(6), Say(caller_speech("I would like to check my balance.")), Wait(10), Press("1234#"), Wait(12)], "rec")
    assert bedrock.turns()[-1].tool_results()[0]["content"] == [{"json": {"digits": "1234", "complete": True}}]
    record = await s3_server.record(call_id)
    [(start, end)] = record["recording"]["pauses"]
    assert 0.0 < start < end
    caller, agent = await _recording(s3_server, call_id)
    low, high = int(start * RATE), int(end * RATE)
    assert high - low > RATE // 2
    assert not caller[low:high].any() and not agent[low:high].any()  # silence for the paused span
    assert _loud(agent[high:]).any()  # the agent is heard again after it ("Account ... has a balance")
    transcript = " ".join(turn["agent"] for turn in record["turns"])
    assert "Account • • • • has a balance" in transcript and "1 2 3 4" not in transcript


@pytest.mark.anyio
async def test_a_card_number_and_an_email_said_on_a_call_are_masked_in_the_record_and_the_log(
    s3_server: Server, fakes: tuple[FakeDeepgram, FakeBedrock]
) -> None:
    deepgram, bedrock = fakes
    deepgram.rescript([f"my card is {CARD} and my email is {EMAIL}"])
    call_id, _ = await _call(s3_server, [
        Wait(6), Say(caller_speech("My card is four one one one, and my email is Ann.")), Wait(10)], "rec")
    assert CARD in bedrock.turns()[-1].texts()[-1]  # the model is given what was said; nothing stores it
    record = await s3_server.record(call_id)
    [turn] = [turn for turn in record["turns"] if turn["user"]]
    assert turn["user"] == "my card is •••• •••• •••• •••• and my email is •••.•••@•••••••.•••"
    assert "I heard: my card is •••• •••• •••• ••••" in turn["agent"] and EMAIL not in turn["agent"]
    log = s3_server.log()
    assert f"[{call_id}] caller turn 1: my card is •••• •••• •••• ••••" in log  # words at DEBUG, masked
    assert CARD not in log and EMAIL not in log and "4111111111111111" not in log


@pytest.mark.anyio
async def test_a_call_that_fails_is_recorded_to_its_end_apology_included(
    s3_server: Server, fakes: tuple[FakeDeepgram, FakeBedrock]
) -> None:
    deepgram, _ = fakes
    deepgram.rescript(["the system is broken"])
    said = caller_speech("The system is broken.")
    call_id, seconds = await _call(s3_server, [Wait(6), Say(said), Wait(15), Say(said), Wait(15)], "rec")
    record = await s3_server.record(call_id)
    assert record["outcome"] == "model_unavailable"
    assert record["recording"]["storage"] == "s3"
    caller, agent = await _recording(s3_server, call_id)
    _check_length(caller, seconds, record)
    last_said = _spans(_loud(caller))[-1]
    assert sum(end - start for start, end in _spans(_loud(agent)) if start > last_said[1]) > 1.0  # the apology


@pytest.mark.anyio
async def test_a_browser_call_is_recorded_at_the_rate_its_transport_delivers(
    local_server: Server, fakes: tuple[FakeDeepgram, FakeBedrock]
) -> None:
    deepgram, _ = fakes
    deepgram.rescript(["where do i park"])
    said = ulaw2lin(caller_speech("Where do I park?"))
    report = await place_browser_call(local_server.http, said, RATE, lead_s=4.0, listen_s=6.0)
    assert report.status == 200
    record = await local_server.record(report.call_id)
    assert record["transport"] == "webrtc" and record["recording"]["sample_rate"] == 16000
    caller, agent = await _recording(local_server, report.call_id, rate=16000)
    assert abs(len(caller) / 16000 - (record["ended_at"] - record["started_at"])) <= 0.5
    caller_spans, agent_spans = _spans(_loud(caller, 16000)), _spans(_loud(agent, 16000))
    assert agent_spans and agent_spans[0][0] < 1.5  # the greeting, on the right
    assert caller_spans and caller_spans[0][0] > 3.0  # the caller spoke after 4 s of silence, on the left
    assert caller_spans[0][1] - caller_spans[0][0] == pytest.approx(speech_seconds(said), abs=0.6)
