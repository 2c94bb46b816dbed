"""Draining a node: it waits for its calls, and at the deadline hands Twilio calls over to other nodes."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from aybiza.config import Settings
from aybiza.drain import drain
from aybiza.edge.calls import open_call_store
from aybiza.errors import EndReason
from aybiza.pipeline import CallContext
from aybiza.session.ending import LiveCalls
from aybiza.testing.fake_twilio import FakeTwilio
from aybiza.testing.redis_server import RedisServer, redis_server_binary
from aybiza.testing.twilio_caller import new_sid

pytestmark = pytest.mark.anyio


class Cluster:
    def __init__(self) -> None:
        self.draining = False

    async def drain(self) -> None:
        self.draining = True


async def test_a_drain_waits_for_the_live_calls_to_end() -> None:
    runtime: Any = SimpleNamespace(draining=False, cluster=Cluster(), calls={"CA1": object()}, settings=Settings(),
                                   store=None, live=LiveCalls())

    async def call_ends() -> None:
        await anyio.sleep(0.3)
        runtime.calls.clear()

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(call_ends)
        await drain(runtime, timeout_s=30, poll_s=0.02)
    assert 0.3 <= time.monotonic() - started < 5
    assert runtime.draining and runtime.cluster.draining


@pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed")
async def test_at_the_deadline_a_twilio_call_is_redirected_and_its_record_left_for_the_next_node(
        tmp_path: Path) -> None:
    call_sid = new_sid("CA")
    with RedisServer() as redis, FakeTwilio(calls=[call_sid]) as twilio:
        settings = Settings(redis_url=redis.url, twilio_account_sid=twilio.account_sid,
                            twilio_auth_token=twilio.auth_token, twilio_api_url=twilio.url,
                            webhook_url="https://voice.example.com/")
        here = await open_call_store(tmp_path / "here", redis_url=redis.url)
        there = await open_call_store(tmp_path / "there", redis_url=redis.url)
        try:
            ctx = CallContext(call_id=call_sid, transport="twilio", agent_id="default")
            await here.start_call(ctx)
            runtime: Any = SimpleNamespace(draining=False, cluster=Cluster(), calls={call_sid: ctx},
                                           settings=settings, store=here, live=LiveCalls())

            async def stream_leaves() -> None:  # Twilio ends the old stream once redirected
                while not twilio.updates:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                runtime.calls.clear()

            async with anyio.create_task_group() as tg:
                tg.start_soon(stream_leaves)
                await drain(runtime, timeout_s=0.2, poll_s=0.02)
            [update] = twilio.updates
            assert update.call_sid == call_sid
            assert ('<Redirect method="POST">https://voice.example.com/twiml?agent=default</Redirect>'
                    in update.twiml)
            live = await here.state.read(call_sid)
            assert live is not None and live.owner.startswith("handover-")  # not archived as ended here
            record, resumed = await there.open_call(ctx)  # the stream reconnects on another node
            assert resumed and record.owner == there.owner
        finally:
            await here.aclose()
            await there.aclose()


async def test_a_lone_node_ends_its_calls_with_a_goodbye_at_its_own_deadline_not_the_cluster_one() -> None:
    """No Redis: nobody can take the calls, so waiting the 300 s cluster deadline would gain nothing."""
    runtime: Any = SimpleNamespace(draining=False, cluster=None, calls={"CA1": object(), "CA2": object()},
                                   settings=Settings(drain_timeout_s=300, drain_alone_s=0.3), store=None,
                                   live=LiveCalls())
    ended: dict[str, tuple[EndReason, str]] = {}

    def ender(call_id: str) -> Any:
        def end(reason: EndReason, detail: str) -> None:
            ended[call_id] = (reason, detail)

        return end

    async def sessions_finish() -> None:  # each session says its goodbye, archives, and is gone
        while len(ended) < 2:  # noqa: ASYNC110
            await anyio.sleep(0.02)
        await anyio.sleep(0.2)
        for call_id in list(runtime.calls):
            runtime.calls.pop(call_id)
            runtime.live.discard(call_id)

    for call_id in runtime.calls:
        runtime.live.add(call_id, ender(call_id))
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sessions_finish)
        await drain(runtime, timeout_s=300, poll_s=0.02)
    assert 0.3 <= time.monotonic() - started < 5
    assert {reason for reason, _ in ended.values()} == {EndReason.SHUTDOWN} and set(ended) == {"CA1", "CA2"}
    assert not runtime.calls and not len(runtime.live)


def test_the_lone_deadline_is_a_setting_under_both_names(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().drain_alone_s == 20
    monkeypatch.setenv("AYBIZA_DRAIN_SECONDS", "7")
    assert Settings().drain_alone_s == 7
    monkeypatch.setenv("AYBIZA_DRAIN_ALONE_S", "5")
    assert Settings().drain_alone_s == 5
