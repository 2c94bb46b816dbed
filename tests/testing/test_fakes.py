"""The fakes behave like the real services where the products rely on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from aybiza.processors.stt.deepgram import deepgram_client
from aybiza.testing import FakeBedrock, FakeDeepgram
from aybiza.testing.fake_deepgram import tone


@pytest.mark.anyio
async def test_deepgram_close_stream_flushes_a_final_then_closes() -> None:
    async with FakeDeepgram(transcripts=["good morning"]) as dg:
        client = deepgram_client("test-key", dg.url)
        received = []
        async with client.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000) as conn:
            await conn.send_media(tone(0.5, 16000))
            await conn.send_close_stream()
            async for message in conn:
                received.append(message)
    kinds = [m.type for m in received]
    assert kinds[-3:] == ["Results", "UtteranceEnd", "Metadata"]
    final = received[-3]
    assert final.is_final and final.speech_final
    assert final.channel.alternatives[0].transcript == "good morning"
    assert final.duration == pytest.approx(0.5)


@pytest.mark.anyio
async def test_deepgram_refuses_a_wrong_key_at_the_handshake() -> None:
    from deepgram.core.api_error import ApiError

    async with FakeDeepgram() as dg:
        client = deepgram_client("not-the-key", dg.url)
        with pytest.raises(ApiError) as caught:
            async with client.speak.v1.connect(model="aura-2-thalia-en"):
                pass
    assert caught.value.status_code == 401


def test_bedrock_rejects_what_bedrock_rejects(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import boto3
    from botocore.config import Config

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    with FakeBedrock() as fb:
        client = boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=fb.url,
            aws_access_key_id="x",
            aws_secret_access_key="y",
            config=Config(retries={"total_max_attempts": 1}),
        )
        for messages in (
            [{"role": "user", "content": [{"text": " "}]}],
            [{"role": "assistant", "content": [{"text": "Hi"}]}],
            [{"role": "user", "content": [{"text": "a"}]}, {"role": "user", "content": [{"text": "b"}]}],
        ):
            with pytest.raises(client.exceptions.ValidationException):
                client.converse_stream(modelId="m", messages=messages)
        ok = client.converse_stream(modelId="m", messages=[{"role": "user", "content": [{"text": "Hi"}]}])
        assert any("metadata" in event for event in ok["stream"])


def test_bedrock_rejects_tool_blocks_bedrock_rejects(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import boto3
    from botocore.config import Config

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    tools = {"tools": [{"toolSpec": {"name": "t", "description": "d", "inputSchema": {"json": {"type": "object"}}}}]}
    ask = {"role": "user", "content": [{"text": "Where is my order?"}]}
    call = {"role": "assistant", "content": [{"toolUse": {"toolUseId": "A", "name": "t", "input": {}}}]}
    answer = {"role": "user", "content": [{"toolResult": {"toolUseId": "A", "content": [{"json": {"ok": True}}]}}]}
    stranger = {"role": "user", "content": [{"toolResult": {"toolUseId": "B", "content": [{"text": "?"}]}}]}
    with FakeBedrock() as fb:
        client = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=fb.url,
                              aws_access_key_id="x", aws_secret_access_key="y",
                              config=Config(retries={"total_max_attempts": 1}))
        for messages, config in (([ask, call, answer], None),  # tool blocks without toolConfig
                                 ([ask, call, {"role": "user", "content": [{"text": "Hello?"}]}], tools),
                                 ([ask, call, stranger], tools)):
            extra = {"toolConfig": config} if config else {}
            with pytest.raises(client.exceptions.ValidationException):
                client.converse_stream(modelId="m", messages=messages, **extra)
        ok = client.converse_stream(modelId="m", messages=[ask, call, answer], toolConfig=tools)
        assert any("metadata" in event for event in ok["stream"])
