"""The lab's building blocks on loopback (no root): the answers, the fake Bedrock script, the delay proxy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from aybiza.processors.llm.sentences import ChatMessage, ReplyRequest, TextDelta
from benchmarks.lab.delayproxy import DelayProxy
from benchmarks.lab.servers import answer_for, continue_answer, lab_reply

CONVERSATION = [{"role": "user", "content": "where is my order?"}]


def test_answer_depends_on_the_whole_conversation() -> None:
    first = answer_for(CONVERSATION)
    longer = answer_for(
        [*CONVERSATION, {"role": "assistant", "content": "x"}, {"role": "user", "content": "where is my order?"}]
    )
    assert len(first) == 10 and first != longer
    assert first[0] == "turn 1 " and longer[0] == "turn 2 "


@pytest.mark.parametrize("spoken_tokens", [0, 1, 4, 10])
def test_continuation_after_a_prefill_completes_the_answer_exactly(spoken_tokens: int) -> None:
    answer = answer_for(CONVERSATION)
    spoken = "".join(answer[:spoken_tokens]).rstrip()  # prefills carry no trailing whitespace
    prefilled = [*CONVERSATION, {"role": "assistant", "content": spoken}]
    assert spoken + "".join(continue_answer(prefilled)) == "".join(answer)


def test_continuation_after_a_prefill_that_ends_mid_token() -> None:
    answer = answer_for(CONVERSATION)
    spoken = "".join(answer[:3]) + answer[3][:2]
    rest = continue_answer([*CONVERSATION, {"role": "assistant", "content": spoken}])
    assert spoken + "".join(rest) == "".join(answer)


async def _serve(handler: object) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    return server, port


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Static test credentials; nothing may look further (no profiles, no instance metadata)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
async def region_url(aws_env: None) -> AsyncIterator[str]:
    """A lab region on loopback: the lab's fake Bedrock behind a 50 ms delay proxy."""
    pytest.importorskip("aiohttp")
    from aybiza.testing.fake_bedrock import FakeBedrock

    with FakeBedrock(script=lab_reply(first_token_s=0.0, token_s=0.0)) as fake:
        proxy = DelayProxy(("127.0.0.1", fake.port), rtt_s=0.05)
        front, front_port = await _serve(proxy.handle)
        yield f"http://127.0.0.1:{front_port}"
        front.close()


async def _ask(url: str, messages: list[dict[str, str]]) -> str:
    pytest.importorskip("boto3")
    from concurrent.futures import ThreadPoolExecutor

    from aybiza.processors.llm.bedrock import BedrockStreamer, bedrock_client

    streamer = BedrockStreamer(region="eu-west-2", model_id="eu.anthropic.claude-haiku-4-5-20251001-v1:0",
                               client=bedrock_client("eu-west-2", url), pool=ThreadPoolExecutor(2))
    request = ReplyRequest("", tuple(ChatMessage(m["role"], m["content"]) for m in messages))  # type: ignore[arg-type]
    return "".join([e.text async for e in streamer.stream_reply(request) if isinstance(e, TextDelta)])


@pytest.mark.anyio
async def test_boto3_hears_the_lab_answer_through_the_delay_proxy(region_url: str) -> None:
    started = time.perf_counter()
    text = await _ask(region_url, CONVERSATION)
    assert text == "".join(answer_for(CONVERSATION))
    assert time.perf_counter() - started >= 2 * 0.05  # a new connection costs two round trips through the proxy


@pytest.mark.anyio
async def test_boto3_hears_the_rest_of_the_answer_after_a_prefill(region_url: str) -> None:
    answer = answer_for(CONVERSATION)
    spoken = "".join(answer[:4]).rstrip()
    text = await _ask(region_url, [*CONVERSATION, {"role": "assistant", "content": spoken}])
    assert spoken + text == "".join(answer)  # the continuation starts with the space the prefill lost


def test_delay_proxy_one_way_delay_is_half_the_rtt_and_never_negative() -> None:
    proxy = DelayProxy(("127.0.0.1", 1), rtt_s=0.078, jitter_s=0.002)
    samples = [proxy.one_way_s() for _ in range(1000)]
    assert all(0.037 <= s <= 0.041 for s in samples)
    assert DelayProxy(("127.0.0.1", 1), rtt_s=0.0, jitter_s=0.01).one_way_s() >= 0.0
