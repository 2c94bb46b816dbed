"""SIGTERM on a lone node (no Redis, nobody to hand calls to): a bounded wait, then each caller hears goodbye.

Before, such a node waited the cluster's drain deadline (300 s) for calls no
other node could take, and an orchestrator's kill then cut the callers off
in silence. Now it waits ``AYBIZA_DRAIN_ALONE_S``, ends each call with the
agent's apology and goodbye, archives it as ``shutdown`` and exits 0.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import anyio
import httpx
import pytest

from aybiza.edge.archive import SQLiteArchive
from aybiza.processors.stt.whisper import WhisperRecognizer
from aybiza.testing.caller import CallReport, Wait, place_call

from .conftest import heard_pcm, words
from .server import AUTH_TOKEN, running_server

pytestmark = pytest.mark.slow

DEADLINE_S = 2.0


@pytest.mark.anyio
async def test_sigterm_on_a_lone_node_says_goodbye_to_the_caller_archives_and_exits(
        tmp_path: Path, recognizer: WhisperRecognizer) -> None:
    with running_server(tmp_path, {"AYBIZA_DRAIN_ALONE_S": str(DEADLINE_S)}) as server:
        reports: list[CallReport] = []

        async def call() -> None:
            reports.append(await place_call(server.stream_url, [Wait(60, until_idle=False)], auth_token=AUTH_TOKEN))

        async def gauges() -> dict[str, float]:
            async with httpx.AsyncClient(timeout=5, headers=server.api) as client:
                text = (await client.get(f"{server.http}/metrics")).text
            return {name: float(value) for name, value in re.findall(r"^aybiza_(\w+) (\S+)$", text, re.M)}

        before = await gauges()
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await anyio.sleep(6)  # the greeting has been heard; the caller listens on
            signalled = time.monotonic()
            os.kill(server.process.pid, signal.SIGTERM)
            await anyio.sleep(0.5)
            during = await gauges()  # an operator's scrape while the node drains
        ended = time.monotonic()
        assert before["node_draining"] == 0 and during["node_draining"] == 1, (before, during)
        assert before["node_capacity"] > 0 and before["cluster_nodes"] == 0, before  # no Redis: no cluster
        exit_code = await anyio.to_thread.run_sync(lambda: server.process.wait(30))
        [report] = reports
        assert exit_code == 0, server.log()[-3000:]
        assert ended - signalled < DEADLINE_S + 20, "the call ended within the lone deadline and its goodbye"
        after = [at for at in report.media_at if at > signalled + DEADLINE_S]
        assert after, "the caller heard something after the deadline: the goodbye"
        heard = words(recognizer.transcribe(heard_pcm(report), 8000))
        assert {"call", "back"} <= heard or "goodbye" in heard, heard
        archive = SQLiteArchive(server.data_dir / "calls-archive.db")
        try:
            record = await archive.get(report.call_sid)
        finally:
            await archive.aclose()
        assert record is not None and record.status == "ended" and record.outcome == "shutdown"
        assert "drain" in record.outcome_detail
