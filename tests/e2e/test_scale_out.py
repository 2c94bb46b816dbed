"""Two servers, one Redis: a call started on A continues on B after A dies, with its conversation."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from aybiza.testing.caller import Say, Wait, caller_speech, place_call
from aybiza.testing.redis_server import RedisServer, redis_server_binary
from aybiza.testing.twilio_caller import new_sid

from .server import AUTH_TOKEN, running_server

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed")]


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_a_call_started_on_one_server_is_resumed_on_another(tmp_path: Path, redis: RedisServer) -> None:
    env = {"AYBIZA_REDIS_URL": redis.url}
    call_sid = new_sid("CA")
    first_question = caller_speech("what are your opening hours")
    with running_server(tmp_path / "a", env) as server_a:

        async def talk_then_lose_the_server() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: place_call(server_a.stream_url, [Wait(20), Say(first_question), Wait(30)],
                                                 auth_token=AUTH_TOKEN, call_sid=call_sid, call_timeout=40))
                async with httpx.AsyncClient(timeout=5, headers=server_a.api) as client:
                    while True:  # until A has the caller's first turn and its answer on record
                        await anyio.sleep(0.2)
                        response = await client.get(f"{server_a.http}/api/calls/{call_sid}")
                        record = response.json() if response.status_code == 200 else {}  # 404 until it starts
                        if any(t["user"] and t["agent"] for t in record.get("turns", [])):
                            break
                os.kill(server_a.process.pid, signal.SIGKILL)

        anyio.run(talk_then_lose_the_server)
        server_a.process.wait(10)

    with running_server(tmp_path / "b", env) as server_b:
        second_question = caller_speech("where are you located")
        report = anyio.run(lambda: place_call(server_b.stream_url, [Wait(1.5, until_idle=False),
                                                                    Say(second_question), Wait(30)],
                                              auth_token=AUTH_TOKEN, call_sid=call_sid))
        assert report.turns and report.turns[0].latency is not None  # B answered
        record = httpx.get(f"{server_b.http}/api/calls/{call_sid}", headers=server_b.api, timeout=5).json()
        users = [t["user"] for t in record["turns"] if t["user"]]
        assert len(users) == 2, record["turns"]  # A's turn was carried over, B's added
        greetings = [t for t in record["turns"] if "Harbor Lane Dental" in t["agent"]]
        assert len(greetings) == 1  # B did not greet the caller again
        assert (record["status"], record["outcome"]) == ("ended", "hangup")
        assert "resumed a call from another process" in server_b.log()
