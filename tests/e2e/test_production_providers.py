"""A phone call through the Twilio endpoint with all three production providers.

The server runs the real deepgram-sdk (listen and speak) and boto3
(ConverseStream) against local fakes that speak their wire protocols; only
the endpoint URLs differ from production.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aybiza.testing.caller import Say, Wait, caller_speech, place_call
from aybiza.testing.fake_bedrock import BedrockReply, FakeBedrock
from aybiza.testing.fake_deepgram import FakeDeepgram

from .server import AUTH_TOKEN, Server, running_server

pytestmark = pytest.mark.slow

ANSWER = "We are open Monday to Friday from eight to six. Is there anything else?"


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeDeepgram, FakeBedrock]]:
    with FakeDeepgram(transcripts=["what are your opening hours"]) as deepgram, \
            FakeBedrock(script=[BedrockReply(text=ANSWER, input_tokens=120, output_tokens=18)]) as bedrock:
        yield deepgram, bedrock


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fakes: tuple[FakeDeepgram, FakeBedrock]) -> Iterator[Server]:
    deepgram, bedrock = fakes
    env = {
        "AYBIZA_STT": "deepgram", "AYBIZA_LLM": "bedrock", "AYBIZA_TTS": "deepgram",
        "DEEPGRAM_API_KEY": "test-key", "AYBIZA_DEEPGRAM_URL": deepgram.url,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock.url, "AWS_ACCESS_KEY_ID": "AKIDTEST",
        "AWS_SECRET_ACCESS_KEY": "secret", "AWS_EC2_METADATA_DISABLED": "true",
        "AYBIZA_HEALTH_PROBES": "false",
    }
    with running_server(tmp_path_factory.mktemp("providers"), env) as running:
        yield running


@pytest.mark.anyio
async def test_call_with_deepgram_and_bedrock_answers_through_the_fakes(
    server: Server, fakes: tuple[FakeDeepgram, FakeBedrock]
) -> None:
    deepgram, bedrock = fakes
    report = await place_call(server.stream_url, [Wait(15), Say(caller_speech("what are your opening hours")),
                                                  Wait(15)], auth_token=AUTH_TOKEN)
    assert report.close_code == 1000
    assert report.turns and report.turns[0].latency is not None
    # STT: μ-law 8 kHz went to Deepgram as it arrived, and Finalize followed our VAD's stop
    listen = deepgram.listens[0]
    assert listen.query["encoding"] == "mulaw" and listen.query["sample_rate"] == "8000"
    assert listen.query["model"] == "nova-3"
    assert "Finalize" in listen.types()
    # capacity: no permessage-deflate on either socket, and the caller's audio in 100 ms messages (800 μ-law bytes)
    sessions: list[Any] = [listen, *deepgram.speaks]
    for session in sessions:
        assert "sec-websocket-extensions" not in {k.lower() for k in session.headers}
    sizes = [int(e.split(":")[1]) for e in listen.events if e.startswith("audio:")]
    assert sizes and len(sizes) <= sum(sizes) // 800 + 2, sizes  # not one message per 20 ms frame (160 bytes)
    # LLM: the transcript reached Claude with the agent's system prompt
    [check, request] = bedrock.requests
    assert check.model_id == "aybiza-credentials-check"  # the startup key check, not a turn
    # clean audio in English: the premium tier with extended thinking, as a US inference profile
    assert request.model_id == "us.anthropic.claude-sonnet-4-6"
    assert request.thinking is not None
    assert "opening hours" in str(request.body["messages"])
    assert "Harbor Lane Dental" in str(request.body["system"])
    # TTS: greeting and answer were spoken, one flush per turn
    texts = " ".join(t for session in deepgram.speaks for t in session.texts)
    assert "Harbor Lane Dental" in texts and "Monday to Friday" in texts
    flushes = [session.types().count("Flush") for session in deepgram.speaks]
    assert sum(flushes) == 2  # greeting and answer
    assert deepgram.speaks[0].query["encoding"] == "mulaw"
    assert report.received_bytes > 4000  # greeting and answer reached the caller
    async with httpx.AsyncClient(timeout=5) as client:
        record = (await client.get(f"{server.http}/api/calls/{report.call_sid}", headers=server.api)).json()
    usage = record["usage"]
    assert usage["tokens"]["us.anthropic.claude-sonnet-4-6"] == {"input": 120, "output": 18}
    assert usage["stt_seconds"]["nova-3"] > 0 and usage["tts_chars"]["aura-2"] > 0
    assert record["route"]["region"] == "us-east-1" and float(record["cost"]["total_usd"]) > 0
    assert record["route"]["regions_tried"] == "us-east-1"


def test_missing_deepgram_key_is_a_clear_startup_error(tmp_path: Path) -> None:
    env = {"AYBIZA_STT": "deepgram", "DEEPGRAM_API_KEY": ""}
    with pytest.raises(RuntimeError, match="DEEPGRAM_API_KEY is not set"), running_server(tmp_path, env):
        pass
