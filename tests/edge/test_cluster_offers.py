"""A live node archives the calls sent to it whose Media Stream never came (``no_connection``), once."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aybiza.cluster import Cluster
from aybiza.config import Settings
from aybiza.edge.archive import SQLiteArchive
from aybiza.edge.calls import CallStore
from aybiza.edge.nodes import Node, NodeRegistry
from aybiza.edge.records import CallRecord
from aybiza.edge.redis_util import redis_client
from aybiza.edge.state_sqlite import SQLiteState

pytestmark = pytest.mark.anyio


async def test_a_call_whose_stream_never_came_is_archived_by_its_node_after_its_token_expired(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = redis_client(redis_url)
    ended: list[list[str]] = []

    async def calls_ended(call_ids: list[str]) -> None:
        ended.append(call_ids)

    async with CallStore(SQLiteState(tmp_path / "live.db"), SQLiteArchive(tmp_path / "archive.db"),
                         outbox_dir=tmp_path / "outbox", owner="node-b") as store:
        runtime: Any = SimpleNamespace(store=store, settings=Settings(call_token_ttl_s=60.0),
                                       interrupted_calls_ended=calls_ended)
        b = NodeRegistry(client, "node-b")
        cluster = Cluster(runtime, b)
        try:
            await b.register(Node("node-b", "https://b.example.test", 10, 0, False), [])
            for call_sid in ("CA-lost", "CA-came"):
                assert await b.pick(call_sid, caller="+442071234567", agent_id="default") is not None
            await store.start(CallRecord(call_id="CA-came"))  # its stream came, before b's heartbeat said so
            assert await cluster.archive_unconnected() == []  # the tokens still live: the streams may come
            later = time.time() + 61
            monkeypatch.setattr(time, "time", lambda: later)
            assert await cluster.archive_unconnected() == ["CA-lost"]
            record = await store.archive.get("CA-lost")
            assert record is not None and (record.status, record.outcome) == ("ended", "no_connection")
            assert (record.caller_country, record.agent_id) == ("GB", "default")
            assert "never opened the call's Media Stream within 60 s" in record.outcome_detail
            assert await store.archive.get("CA-came") is None  # live: not touched
            assert await b.pending("node-b") == []
            assert await cluster.archive_unconnected() == []
            assert ended == [[], ["CA-lost"], []]
        finally:
            await b.forget("node-b")
            await client.aclose()
