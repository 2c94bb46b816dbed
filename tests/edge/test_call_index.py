"""The archive's console columns: search by every filter, counted and paged, on SQLite and PostgreSQL; an
archive written before the columns existed gains them and is back-filled in place."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aybiza.edge.archive import Archive, PostgresArchive, SQLiteArchive
from aybiza.edge.call_index import CallFilter, index_values
from aybiza.edge.records import CallRecord, TurnRecord
from aybiza.pipeline.ledger import ToolUse, Usage

pytestmark = pytest.mark.anyio
NOW = time.time()


def _record(n: int, **changes: object) -> CallRecord:
    base = CallRecord(call_id=f"CA{n:032d}", status="ended", caller_country="GB", agent_id="default",
                      transport="twilio", route={"region": "eu-west-2"}, started_at=NOW - 1000 + n,
                      ended_at=NOW - 1000 + n + 30, outcome="hangup", cost={"total_usd": "0.0100"},
                      usage=Usage(answers={"faq": 1}))
    return base.model_copy(update=changes)


RECORDS = [
    _record(1),
    _record(2, caller_country="US", route={"region": "us-east-1"}, cost={"total_usd": "0.0500"}),
    _record(3, usage=Usage(failovers=[("eu-west-2", "eu-central-1")], answers={"claude": 1}),
            turns=[TurnRecord(turn_id=1, user="hi", interrupted=True,
                              tool_calls=[ToolUse(turn=1, name="order_status", kind="http")])]),
    _record(4, transport="webrtc", outcome="transferred", quality={"min_score": 0.3, "tier": "low"}),
    _record(5, ended_at=NOW - 1000 + 5 + 300, outcome="model_unavailable"),
]


@pytest.fixture(params=["sqlite", "postgresql"])
async def archive(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Archive]:
    store: Archive
    if request.param == "sqlite":
        store = SQLiteArchive(tmp_path / "archive.db")
    else:
        store = PostgresArchive(request.getfixturevalue("postgres_url"))
    for record in RECORDS:
        await store.put(record)
    yield store
    await store.aclose()


async def _ids(archive: Archive, **filters: object) -> list[int]:
    rows, total = await archive.search(CallFilter.model_validate(filters))
    assert total == len(rows)
    return [int(row.call_id[2:]) for row in rows]


async def test_each_filter_finds_its_calls_newest_first(archive: Archive) -> None:
    assert await _ids(archive) == [5, 4, 3, 2, 1]
    assert await _ids(archive, country="US") == [2]
    assert await _ids(archive, transport="webrtc") == [4]
    assert await _ids(archive, region="us-east-1") == [2]
    assert await _ids(archive, model="claude") == [3]
    assert await _ids(archive, outcome="model_unavailable") == [5]
    assert await _ids(archive, min_duration_s=100) == [5]
    assert await _ids(archive, max_cost_usd=0.02) == [5, 4, 3, 1]
    assert await _ids(archive, min_cost_usd=0.02) == [2]
    assert await _ids(archive, flags=("failover",)) == [3]
    assert await _ids(archive, flags=("barge_in", "tool_call")) == [3]
    assert await _ids(archive, flags=("transfer",)) == [4]
    assert await _ids(archive, flags=("low_quality",)) == [4]
    assert await _ids(archive, country="GB", flags=("failover",), since=NOW - 998) == [3]


async def test_pages_and_a_capped_count(archive: Archive) -> None:
    rows, total = await archive.search(CallFilter(), limit=2, offset=2)
    assert [row.call_id for row in rows] == [RECORDS[2].call_id, RECORDS[1].call_id] and total == 5
    _, capped = await archive.search(CallFilter(), limit=1, count_cap=3)
    assert capped == 3
    row = (await archive.search(CallFilter(flags=("failover",))))[0][0]
    assert (row.failovers, row.barge_ins, row.tool_calls, row.turns, row.model) == (1, 1, 1, 1, "claude")
    assert row.cost_usd == pytest.approx(0.01) and row.duration_s == pytest.approx(30)


async def test_a_newer_version_updates_the_columns(archive: Archive) -> None:
    await archive.put(RECORDS[0].model_copy(update={"version": 5, "caller_country": "FR"}))
    assert await _ids(archive, country="FR") == [1]
    await archive.put(RECORDS[0].model_copy(update={"version": 4, "caller_country": "ES"}))  # older: ignored
    assert await _ids(archive, country="ES") == []


async def test_started_since_reads_whole_records(archive: Archive) -> None:
    records = await archive.started_since(NOW - 997)
    assert [r.call_id for r in records] == [RECORDS[4].call_id, RECORDS[3].call_id, RECORDS[2].call_id]
    assert records[2].turns[0].tool_calls[0].name == "order_status"


async def test_an_archive_from_before_the_console_gains_its_columns_and_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE calls (call_id TEXT PRIMARY KEY, version INTEGER NOT NULL, status TEXT NOT NULL,
        agent_id TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL, purged INTEGER NOT NULL DEFAULT 0,
        data TEXT NOT NULL);""")
    for r in RECORDS:
        db.execute("INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                   (r.call_id, r.version, r.status, r.agent_id, r.started_at, r.ended_at, r.to_json()))
    db.commit()
    db.close()
    archive = SQLiteArchive(path)
    try:
        assert await _ids(archive, flags=("failover",)) == [3]
        assert await _ids(archive, country="US") == [2]
        plan = archive._db.execute("EXPLAIN QUERY PLAN SELECT call_id FROM calls WHERE caller_country = 'US' "
                                   "ORDER BY started_at DESC LIMIT 50").fetchall()
        assert "calls_caller_country_started" in " ".join(str(step) for step in plan), plan
    finally:
        await archive.aclose()


def test_index_values_of_an_empty_record_are_defined() -> None:
    values = index_values(CallRecord(call_id="CA1"))
    assert values[:5] == ("", "twilio", "", "none", "") and values[-1] >= 1


async def test_a_postgresql_archive_from_before_the_console_gains_its_columns_and_rows(postgres_url: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("""CREATE TABLE aybiza_calls (call_id TEXT PRIMARY KEY, version INTEGER NOT NULL,
            status TEXT NOT NULL, agent_id TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL,
            ended_at DOUBLE PRECISION, purged BOOLEAN NOT NULL DEFAULT FALSE, data JSONB NOT NULL)""")
        for r in RECORDS:
            await conn.execute("INSERT INTO aybiza_calls VALUES (%s, %s, %s, %s, %s, %s, FALSE, %s::jsonb)",
                               (r.call_id, r.version, r.status, r.agent_id, r.started_at, r.ended_at, r.to_json()))
    archive = PostgresArchive(postgres_url)
    try:
        assert await _ids(archive, flags=("transfer",)) == [4]
        assert await _ids(archive, transport="webrtc", flags=("low_quality",)) == [4]
    finally:
        await archive.aclose()
