"""The lab's building blocks on loopback (no root): fake region server, its client, the delay proxy."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from aybiza.routing.regions import default_catalog
from benchmarks.lab.delayproxy import DelayProxy
from benchmarks.lab.servers import FakeRegionClient, RegionServer, answer_for, continue_answer

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
async def region_url() -> AsyncIterator[str]:
    server, port = await _serve(RegionServer("eu-west-2", first_token_s=0.0, token_s=0.0).handle)
    proxy = DelayProxy(("127.0.0.1", port), rtt_s=0.05)
    front, front_port = await _serve(proxy.handle)
    yield f"http://127.0.0.1:{front_port}"
    for listener in (front, server):
        listener.close()


@pytest.mark.anyio
async def test_client_streams_a_turn_through_the_delay_proxy(region_url: str) -> None:
    client = FakeRegionClient({"eu-west-2": region_url})
    try:
        started = time.perf_counter()
        chunks = [chunk async for chunk in client.stream_turn("eu-west-2", CONVERSATION)]
        elapsed = time.perf_counter() - started
        await client.probe(default_catalog().region("eu-west-2"))
    finally:
        await client.aclose()
    assert "".join(chunks) == "".join(answer_for(CONVERSATION))
    assert elapsed >= 2 * 0.05  # a new connection costs two round trips through the proxy


@pytest.mark.anyio
async def test_client_refuses_an_answer_from_the_wrong_region(region_url: str) -> None:
    client = FakeRegionClient({"eu-central-1": region_url})
    try:
        with pytest.raises(RuntimeError, match="lab wiring"):
            async for _ in client.stream_turn("eu-central-1", CONVERSATION):
                pass
        with pytest.raises(ConnectionError, match="probe answered"):
            await client.probe(default_catalog().region("eu-central-1"))
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_client_reports_a_refused_connection_as_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        client = FakeRegionClient({"us-east-1": f"http://127.0.0.1:{port}"})
        try:
            with pytest.raises(ConnectionError, match="us-east-1"):
                async for _ in client.stream_turn("us-east-1", CONVERSATION):
                    pass
        finally:
            await client.aclose()


def test_delay_proxy_one_way_delay_is_half_the_rtt_and_never_negative() -> None:
    proxy = DelayProxy(("127.0.0.1", 1), rtt_s=0.078, jitter_s=0.002)
    samples = [proxy.one_way_s() for _ in range(1000)]
    assert all(0.037 <= s <= 0.041 for s in samples)
    assert DelayProxy(("127.0.0.1", 1), rtt_s=0.0, jitter_s=0.01).one_way_s() >= 0.0
