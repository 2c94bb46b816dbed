"""``kill -9`` mid-call with recording on: after a restart the interrupted call links what was recorded."""

from __future__ import annotations

import io
import os
import signal
import wave
from pathlib import Path

import anyio
import httpx
import pytest

from aybiza.testing.caller import Wait, place_call

from .server import AUTH_TOKEN, running_server

pytestmark = pytest.mark.slow

RECORDING = {"AYBIZA_RECORD_CALLS": "true"}


def test_the_recording_of_a_call_cut_by_a_crash_is_filed_and_linked_at_the_next_start(tmp_path: Path) -> None:
    with running_server(tmp_path, RECORDING) as first:

        async def call_then_crash() -> str:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: place_call(first.stream_url, [Wait(30, until_idle=False)],
                                                 auth_token=AUTH_TOKEN, call_timeout=40))
                async with httpx.AsyncClient(timeout=5, headers=first.api) as client:
                    while True:
                        await anyio.sleep(0.2)
                        live = (await client.get(f"{first.http}/api/calls")).json()["active"]
                        if live:
                            break
                await anyio.sleep(5)  # the greeting is recorded (written to disk second by second)
                os.kill(first.process.pid, signal.SIGKILL)
                tg.cancel_scope.cancel()
                return str(live[0]["call_id"])
            raise AssertionError("the task group ended before the call was seen live")

        crashed_id = anyio.run(call_then_crash)
        first.process.wait(10)
        assert (first.data_dir / "recordings" / f"{crashed_id}.part").exists()

    with running_server(tmp_path, RECORDING) as second:
        record = httpx.get(f"{second.http}/api/calls/{crashed_id}", headers=second.api, timeout=5).json()
        assert record["outcome"] == "interrupted"
        recording = record["recording"]
        assert recording is not None and recording["incomplete"] is True and recording["key"] == f"{crashed_id}.wav"
        assert 2.0 < recording["duration_s"] < 10.0
        response = httpx.get(f"{second.http}/api/calls/{crashed_id}/recording", headers=second.api, timeout=10)
        assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(response.content), "rb") as wav:
            assert wav.getnchannels() == 2
            assert wav.getnframes() / wav.getframerate() == pytest.approx(recording["duration_s"], abs=0.01)
        assert not (second.data_dir / "recordings" / f"{crashed_id}.part").exists()
