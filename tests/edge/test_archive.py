"""The archive contract on SQLite and on a real PostgreSQL server: durable upserts, listing, retention."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aybiza.edge.archive import Archive, PostgresArchive, SQLiteArchive, default_archive_url, open_archive
from aybiza.edge.records import CallRecord, TurnRecord
from aybiza.errors import ConfigError
from aybiza.pipeline import Usage

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgresql"])
async def archive(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Archive]:
    if request.param == "sqlite":
        store: Archive = SQLiteArchive(tmp_path / "archive.db")
    else:
        store = PostgresArchive(request.getfixturevalue("postgres_url"))
    yield store
    await store.aclose()


def _record(call_id: str, *, version: int = 3, ended_days_ago: float = 0.0, agent: str = "default") -> CallRecord:
    ended = time.time() - ended_days_ago * 86400
    return CallRecord(
        call_id=call_id, status="ended", version=version, caller="+15555550123", agent_id=agent,
        started_at=ended - 60, updated_at=ended, ended_at=ended, outcome="hangup", digits="42",
        turns=[TurnRecord(turn_id=1, user="What are your hours?", agent="Nine to five.",
                          timings={"llm_first_token": 0.1})],
        usage=Usage(stt_seconds={"nova-3": 4.0}), cost={"total_usd": "0.01"},
    )


async def test_put_then_get_returns_the_same_record(archive: Archive) -> None:
    record = _record("CA1")
    await archive.put(record)
    assert await archive.get("CA1") == record
    assert await archive.get("CA-missing") is None


async def test_put_is_idempotent_and_never_goes_back_a_version(archive: Archive) -> None:
    await archive.put(_record("CA1", version=5))
    await archive.put(_record("CA1", version=5))
    older = _record("CA1", version=4)
    older.outcome = "stale"
    await archive.put(older)
    found = await archive.get("CA1")
    assert found is not None and found.version == 5 and found.outcome == "hangup"
    assert await archive.count() == 1


async def test_list_newest_first_with_filters(archive: Archive) -> None:
    for i, agent in enumerate(["a", "b", "a"]):
        record = _record(f"CA{i}", agent=agent)
        record.started_at = 1000.0 + i
        await archive.put(record)
    interrupted = _record("CAx")
    interrupted.status, interrupted.started_at = "interrupted", 500.0
    await archive.put(interrupted)
    assert [r.call_id for r in await archive.list()] == ["CA2", "CA1", "CA0", "CAx"]
    assert [r.call_id for r in await archive.list(limit=2, offset=1)] == ["CA1", "CA0"]
    assert [r.call_id for r in await archive.list(agent_id="a")] == ["CA2", "CA0"]
    assert [r.call_id for r in await archive.list(status="interrupted")] == ["CAx"]


async def test_retention_purges_old_transcripts_only(archive: Archive) -> None:
    await archive.put(_record("old", ended_days_ago=40))
    await archive.put(_record("recent", ended_days_ago=2))
    assert await archive.purge_transcripts(30) == 1
    assert await archive.purge_transcripts(30) == 0
    old, recent = await archive.get("old"), await archive.get("recent")
    assert old is not None and recent is not None
    assert old.transcript_purged and old.turns[0].user == "" and old.turns[0].agent == ""
    assert old.caller == "" and old.digits == ""
    assert old.turns[0].timings == {"llm_first_token": 0.1} and old.cost == {"total_usd": "0.01"}
    assert recent.turns[0].user == "What are your hours?" and recent.caller == "+15555550123"


def test_open_archive_chooses_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for empty in (None, "", "  "):
        default = open_archive(empty, tmp_path)
        assert isinstance(default, SQLiteArchive) and default.path == tmp_path / "calls-archive.db"
    absolute = open_archive(f"sqlite:///{tmp_path}/x.db", tmp_path)  # sqlite:////tmp/...: absolute
    assert isinstance(absolute, SQLiteArchive) and absolute.path == tmp_path / "x.db"
    monkeypatch.chdir(tmp_path)
    relative = open_archive("sqlite:///var/calls.db", tmp_path / "elsewhere")
    assert isinstance(relative, SQLiteArchive) and relative.path.resolve() == tmp_path / "var" / "calls.db"
    assert isinstance(open_archive("postgresql://u@localhost/db", tmp_path), PostgresArchive)
    assert isinstance(open_archive("postgres://u@localhost/db", tmp_path), PostgresArchive)


@pytest.mark.parametrize("url", ["mysql://admin:hunter2@db/calls", "sqlite://", "sqlite:///", "sqlite:calls.db",
                                 "/var/calls.db", "http://archive"])
def test_open_archive_refuses_other_urls_naming_the_setting(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="AYBIZA_ARCHIVE_URL") as raised:
        open_archive(url, tmp_path)
    assert "hunter2" not in str(raised.value)  # a URL's password never reaches a log


def test_default_archive_url_is_absolute_and_opens_the_default_file(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = default_archive_url("var")
    assert url == f"sqlite:///{tmp_path.resolve()}/var/calls-archive.db"
    archive = open_archive(url, "ignored")
    assert isinstance(archive, SQLiteArchive) and archive.path == tmp_path.resolve() / "var" / "calls-archive.db"
