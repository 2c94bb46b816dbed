"""``kill -9`` of a server mid-call: after a restart the open call is archived as interrupted."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import httpx
import pytest

from aybiza.testing.caller import Say, Wait, caller_speech, place_call

from .server import AUTH_TOKEN, running_server

pytestmark = pytest.mark.slow


def test_a_killed_server_leaves_no_call_unrecorded(tmp_path: Path) -> None:
    question = caller_speech("what are your opening hours")
    with running_server(tmp_path) as first:
        finished = anyio.run(lambda: place_call(first.stream_url, [Wait(20), Say(question), Wait(30)],
                                                auth_token=AUTH_TOKEN))
        assert finished.close_code == 1000

        async def call_then_crash() -> str:
            async with anyio.create_task_group() as tg:
                sid: list[str] = []

                async def caller() -> None:
                    report = await place_call(first.stream_url, [Wait(20), Say(question), Wait(30)],
                                              auth_token=AUTH_TOKEN, call_timeout=40)
                    sid.append(report.call_sid)

                tg.start_soon(caller)
                async with httpx.AsyncClient(timeout=5, headers=first.api) as client:
                    while True:  # wait until the call's first turn is on record
                        await anyio.sleep(0.2)
                        listing = (await client.get(f"{first.http}/api/calls")).json()
                        live = [c for c in listing["active"] if c["turns"] >= 2]  # greeting + a question
                        if live:
                            break
                os.kill(first.process.pid, signal.SIGKILL)
                return str(live[0]["call_id"])
            raise AssertionError("the task group ended before the call was seen live")

        crashed_id = anyio.run(call_then_crash)
        first.process.wait(10)

    with running_server(tmp_path) as second:
        crashed = httpx.get(f"{second.http}/api/calls/{crashed_id}", headers=second.api, timeout=5).json()
        assert (crashed["status"], crashed["outcome"]) == ("interrupted", "interrupted")
        assert any(turn["user"] for turn in crashed["turns"])  # what was known survived
        done = httpx.get(f"{second.http}/api/calls/{finished.call_sid}", headers=second.api, timeout=5).json()
        assert (done["status"], done["outcome"]) == ("ended", "hangup")
        assert "interrupted" in second.log()
