"""The durable archive of finished calls: SQLite (default) or PostgreSQL (the ``archive_url`` setting).

``put`` returns only once the record is committed durably: SQLite with
``synchronous=FULL`` (survives power loss, ~3 ms, once per call, in a worker
thread), PostgreSQL on ``COMMIT``. Writes are idempotent upserts keyed by
call id that never replace a record with an older version, so a retried or
replayed write is harmless.

``purge_transcripts(days)`` is the retention setting: records that ended
more than ``days`` ago lose what the caller and agent said, the caller's
number and the DTMF digits; timings, usage, cost and outcome stay.

A SQLite archive and its WAL are mode 0600 in a 0700 directory
(:mod:`aybiza.private`): other users of the machine cannot read them.
"""

from __future__ import annotations

import builtins
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError
from ..private import private_sqlite
from .call_index import (
    COLUMN_NAMES,
    INDEX_VERSION,
    ROW_COLUMNS,
    CallFilter,
    CallRow,
    index_values,
    pg_migration,
    sqlite_migration,
    where_clause,
)
from .databases import PostgresConnection, SQLiteFile
from .records import CallRecord

__all__ = [
    "Archive",
    "PostgresArchive",
    "SQLiteArchive",
    "default_archive_path",
    "default_archive_url",
    "open_archive",
    "purge_record",
]

T = TypeVar("T")


def purge_record(record: CallRecord) -> CallRecord:
    """A copy of ``record`` without transcript, tool arguments and results, caller number or digits (retention)."""
    turns = [turn.model_copy(update={"user": "", "agent": "", "tool_calls": [
        use.model_copy(update={"arguments": {}, "result": {}, "error": ""}) for use in turn.tool_calls]})
        for turn in record.turns]
    return record.model_copy(update={"turns": turns, "caller": "", "digits": "", "transcript_purged": True})


class Archive(ABC):
    """Where ended (and interrupted) call records are kept."""

    kind: str = "archive"

    @abstractmethod
    async def put(self, record: CallRecord) -> None:
        """Store ``record`` durably before returning (keeps the higher version if one exists)."""

    @abstractmethod
    async def get(self, call_id: str) -> CallRecord | None:
        """The archived record of ``call_id``, or None."""

    @abstractmethod
    async def list(
        self, *, limit: int = 50, offset: int = 0, status: str | None = None, agent_id: str | None = None
    ) -> list[CallRecord]:
        """Archived records, newest start first."""

    @abstractmethod
    async def count(self) -> int:
        """How many records are archived."""

    @abstractmethod
    async def purge_transcripts(self, older_than_days: float, *, now: float | None = None) -> int:
        """Strip transcripts of records that ended more than ``older_than_days`` ago; return how many."""

    # Operator console (issue 17): search by the derived columns of aybiza.edge.call_index.
    @abstractmethod
    async def search(self, filters: CallFilter, *, limit: int = 50, offset: int = 0,
                     count_cap: int = 10_000) -> tuple[builtins.list[CallRow], int]:
        """Rows matching ``filters`` (newest start first) and how many match, counted up to ``count_cap``."""

    @abstractmethod
    async def started_since(self, since: float, *, limit: int = 2000) -> builtins.list[CallRecord]:
        """Whole records of calls started at or after ``since`` (newest first, at most ``limit``)."""

    async def aclose(self) -> None:
        """Close connections."""
        return None


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    purged INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_started ON calls (started_at DESC);
CREATE INDEX IF NOT EXISTS calls_ended ON calls (ended_at) WHERE purged = 0;
"""

_CONSOLE_SET = ", ".join(f"{name} = excluded.{name}" for name in COLUMN_NAMES)
_COLUMN_LIST = ", ".join(COLUMN_NAMES)
_QMARKS = ", ".join("?" for _ in COLUMN_NAMES)
_PCTS = ", ".join("%s" for _ in COLUMN_NAMES)
_PG_CONSOLE_SET = ", ".join(f"{name} = EXCLUDED.{name}" for name in COLUMN_NAMES)
_ROW_SELECT = ", ".join(ROW_COLUMNS)
_SQLITE_UPSERT = f"""
INSERT INTO calls (call_id, version, status, agent_id, started_at, ended_at, purged, data, {_COLUMN_LIST})
VALUES (?, ?, ?, ?, ?, ?, ?, ?, {_QMARKS})
ON CONFLICT (call_id) DO UPDATE SET
    version = excluded.version, status = excluded.status, agent_id = excluded.agent_id,
    started_at = excluded.started_at, ended_at = excluded.ended_at, purged = excluded.purged,
    data = excluded.data, {_CONSOLE_SET}
WHERE excluded.version >= calls.version
"""


def _row(record: CallRecord) -> tuple[Any, ...]:
    return (record.call_id, record.version, record.status, record.agent_id, record.started_at,
            record.ended_at, record.transcript_purged, record.to_json(), *index_values(record))


_BACKFILL_BATCH = 1000
_INDEX_SET = ", ".join(f"{name} = ?" for name in COLUMN_NAMES)


def _sqlite_console_columns(db: sqlite3.Connection) -> None:
    """Add the console's columns and indexes to an older archive, and back-fill its rows (once)."""
    existing = {row[1] for row in db.execute("PRAGMA table_info(calls)")}
    for statement in sqlite_migration(existing, "calls"):
        db.execute(statement)
    while True:
        rows = db.execute("SELECT call_id, data FROM calls WHERE index_version IS NULL OR index_version < ? LIMIT ?",
                          (INDEX_VERSION, _BACKFILL_BATCH)).fetchall()
        if not rows:
            return
        db.execute("BEGIN IMMEDIATE")
        for call_id, data in rows:
            db.execute(f"UPDATE calls SET {_INDEX_SET} WHERE call_id = ?",
                       (*index_values(CallRecord.from_json(data)), call_id))
        db.execute("COMMIT")


class SQLiteArchive(Archive):
    """Archive in a SQLite file (WAL, ``synchronous=FULL``); every call runs in a worker thread."""

    kind = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = SQLiteFile(self.path, _SQLITE_SCHEMA)
        self._db = self._file.db
        _sqlite_console_columns(self._db)
        private_sqlite(self.path)  # side files an older version left wider

    def _locked(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._file.call(fn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.run(fn)

    def put_sync(self, record: CallRecord) -> None:
        """Blocking :meth:`put` (for scripts and recovery outside an event loop)."""
        row = _row(record)
        self._locked(lambda db: db.execute(_SQLITE_UPSERT, row))

    async def put(self, record: CallRecord) -> None:
        """Upsert and commit with ``synchronous=FULL``."""
        row = _row(record)
        await self._run(lambda db: db.execute(_SQLITE_UPSERT, row))

    async def get(self, call_id: str) -> CallRecord | None:
        """The archived record of ``call_id``, or None."""
        row = await self._run(lambda db: db.execute("SELECT data FROM calls WHERE call_id = ?", (call_id,)).fetchone())
        return None if row is None else CallRecord.from_json(row[0])

    async def list(
        self, *, limit: int = 50, offset: int = 0, status: str | None = None, agent_id: str | None = None
    ) -> list[CallRecord]:
        """Archived records, newest start first, optionally filtered by status or agent."""
        where, args = _filters(status, agent_id, "?")
        sql = f"SELECT data FROM calls{where} ORDER BY started_at DESC LIMIT ? OFFSET ?"
        rows = await self._run(lambda db: db.execute(sql, (*args, limit, offset)).fetchall())
        return [CallRecord.from_json(row[0]) for row in rows]

    async def count(self) -> int:
        """How many records are archived."""
        row = await self._run(lambda db: db.execute("SELECT count(*) FROM calls").fetchone())
        return int(row[0])

    async def search(self, filters: CallFilter, *, limit: int = 50, offset: int = 0,
                     count_cap: int = 10_000) -> tuple[builtins.list[CallRow], int]:
        """Rows matching ``filters`` from the derived columns (no JSON read), and their count up to ``count_cap``."""
        where, args = where_clause(filters, "?")
        rows_sql = f"SELECT {_ROW_SELECT} FROM calls{where} ORDER BY started_at DESC LIMIT ? OFFSET ?"
        count_sql = f"SELECT count(*) FROM (SELECT 1 FROM calls{where} LIMIT ?)"

        def query(db: sqlite3.Connection) -> tuple[builtins.list[Any], int]:
            rows = db.execute(rows_sql, (*args, limit, offset)).fetchall()
            return rows, int(db.execute(count_sql, (*args, count_cap)).fetchone()[0])

        rows, total = await self._run(query)
        return [CallRow.from_row(row) for row in rows], total

    async def started_since(self, since: float, *, limit: int = 2000) -> builtins.list[CallRecord]:
        """Whole records of calls started at or after ``since`` (newest first, at most ``limit``)."""
        sql = "SELECT data FROM calls WHERE started_at >= ? ORDER BY started_at DESC LIMIT ?"
        rows = await self._run(lambda db: db.execute(sql, (since, limit)).fetchall())
        return [CallRecord.from_json(row[0]) for row in rows]

    async def purge_transcripts(self, older_than_days: float, *, now: float | None = None) -> int:
        """Strip transcripts of records that ended more than ``older_than_days`` ago (one transaction)."""
        cutoff = (time.time() if now is None else now) - older_than_days * 86400.0

        def purge(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(
                    "SELECT data FROM calls WHERE purged = 0 AND ended_at IS NOT NULL AND ended_at < ?", (cutoff,)
                ).fetchall()
                for (data,) in rows:
                    purged = purge_record(CallRecord.from_json(data))
                    db.execute("UPDATE calls SET purged = 1, data = ? WHERE call_id = ?",
                               (purged.to_json(), purged.call_id))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return len(rows)

        return await self._run(purge)

    async def aclose(self) -> None:
        """Close the database."""
        await self._file.aclose()


def _filters(status: str | None, agent_id: str | None, mark: str) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if status is not None:
        clauses.append(f"status = {mark}")
        args.append(status)
    if agent_id is not None:
        clauses.append(f"agent_id = {mark}")
        args.append(agent_id)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS aybiza_calls (
    call_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION,
    purged BOOLEAN NOT NULL DEFAULT FALSE,
    data JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS aybiza_calls_started ON aybiza_calls (started_at DESC);
CREATE INDEX IF NOT EXISTS aybiza_calls_ended ON aybiza_calls (ended_at) WHERE NOT purged;
"""

_PG_UPSERT = f"""
INSERT INTO aybiza_calls (call_id, version, status, agent_id, started_at, ended_at, purged, data,
    {_COLUMN_LIST})
VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, {_PCTS})
ON CONFLICT (call_id) DO UPDATE SET
    version = EXCLUDED.version, status = EXCLUDED.status, agent_id = EXCLUDED.agent_id,
    started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, purged = EXCLUDED.purged,
    data = EXCLUDED.data, {_PG_CONSOLE_SET}
WHERE EXCLUDED.version >= aybiza_calls.version
"""
_PG_INDEX_SET = ", ".join(f"{name} = %s" for name in COLUMN_NAMES)


async def _pg_console_columns(conn: Any) -> None:
    """Add the console's columns and indexes to an older archive, and back-fill its rows (once)."""
    await conn.execute(pg_migration("aybiza_calls"))
    while True:
        cursor = await conn.execute(
            "SELECT call_id, data::text FROM aybiza_calls WHERE index_version IS NULL OR index_version < %s LIMIT %s",
            (INDEX_VERSION, _BACKFILL_BATCH))
        rows = await cursor.fetchall()
        if not rows:
            return
        async with conn.transaction():
            for call_id, data in rows:
                await conn.execute(f"UPDATE aybiza_calls SET {_PG_INDEX_SET} WHERE call_id = %s",
                                   (*index_values(CallRecord.from_json(data)), call_id))


async def _pg_prepare(conn: Any) -> None:
    await conn.execute(_PG_SCHEMA)
    await _pg_console_columns(conn)


class PostgresArchive(Archive):
    """Archive in PostgreSQL (psycopg 3, asyncio): one connection, reopened once if it broke."""

    kind = "postgresql"

    def __init__(self, url: str, *, connect_timeout_s: float = 3.0) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._pg = PostgresConnection(url, connect_timeout_s=connect_timeout_s, prepare=_pg_prepare)

    async def _run(self, fn: Callable[[Any], Any]) -> Any:
        return await self._pg.run(fn)

    async def open(self) -> None:
        """Connect and create the table (also done lazily on first use)."""
        await self._run(lambda conn: conn.execute("SELECT 1"))

    async def put(self, record: CallRecord) -> None:
        """Upsert; returns after the (autocommit) statement committed."""
        row = _row(record)
        await self._run(lambda conn: conn.execute(_PG_UPSERT, row))

    async def get(self, call_id: str) -> CallRecord | None:
        """The archived record of ``call_id``, or None."""
        async def fetch(conn: Any) -> Any:
            cursor = await conn.execute("SELECT data::text FROM aybiza_calls WHERE call_id = %s", (call_id,))
            return await cursor.fetchone()

        row = await self._run(fetch)
        return None if row is None else CallRecord.from_json(row[0])

    async def list(
        self, *, limit: int = 50, offset: int = 0, status: str | None = None, agent_id: str | None = None
    ) -> list[CallRecord]:
        """Archived records, newest start first, optionally filtered by status or agent."""
        where, args = _filters(status, agent_id, "%s")
        sql = f"SELECT data::text FROM aybiza_calls{where} ORDER BY started_at DESC LIMIT %s OFFSET %s"

        async def fetch(conn: Any) -> Any:
            cursor = await conn.execute(sql, (*args, limit, offset))
            return await cursor.fetchall()

        return [CallRecord.from_json(row[0]) for row in await self._run(fetch)]

    async def count(self) -> int:
        """How many records are archived."""
        async def fetch(conn: Any) -> Any:
            cursor = await conn.execute("SELECT count(*) FROM aybiza_calls")
            return await cursor.fetchone()

        return int((await self._run(fetch))[0])

    async def search(self, filters: CallFilter, *, limit: int = 50, offset: int = 0,
                     count_cap: int = 10_000) -> tuple[builtins.list[CallRow], int]:
        """Rows matching ``filters`` from the derived columns (no JSON read), and their count up to ``count_cap``."""
        where, args = where_clause(filters, "%s")
        rows_sql = (f"SELECT {_ROW_SELECT} FROM aybiza_calls{where} "
                    "ORDER BY started_at DESC LIMIT %s OFFSET %s")
        count_sql = f"SELECT count(*) FROM (SELECT 1 FROM aybiza_calls{where} LIMIT %s) AS matching"

        async def fetch(conn: Any) -> tuple[builtins.list[Any], int]:
            rows = await (await conn.execute(rows_sql, (*args, limit, offset))).fetchall()
            total = await (await conn.execute(count_sql, (*args, count_cap))).fetchone()
            return rows, int(total[0])

        rows, total = await self._run(fetch)
        return [CallRow.from_row(tuple(row)) for row in rows], total

    async def started_since(self, since: float, *, limit: int = 2000) -> builtins.list[CallRecord]:
        """Whole records of calls started at or after ``since`` (newest first, at most ``limit``)."""
        async def fetch(conn: Any) -> Any:
            cursor = await conn.execute("SELECT data::text FROM aybiza_calls WHERE started_at >= %s "
                                        "ORDER BY started_at DESC LIMIT %s", (since, limit))
            return await cursor.fetchall()

        return [CallRecord.from_json(row[0]) for row in await self._run(fetch)]

    async def purge_transcripts(self, older_than_days: float, *, now: float | None = None) -> int:
        """Strip transcripts of records that ended more than ``older_than_days`` ago (one transaction)."""
        cutoff = (time.time() if now is None else now) - older_than_days * 86400.0

        async def purge(conn: Any) -> int:
            async with conn.transaction():
                cursor = await conn.execute(
                    "SELECT data::text FROM aybiza_calls WHERE NOT purged AND ended_at IS NOT NULL AND ended_at < %s"
                    " FOR UPDATE", (cutoff,))
                rows = await cursor.fetchall()
                for (data,) in rows:
                    purged = purge_record(CallRecord.from_json(data))
                    await conn.execute("UPDATE aybiza_calls SET purged = TRUE, data = %s::jsonb WHERE call_id = %s",
                                       (purged.to_json(), purged.call_id))
            return len(rows)

        return int(await self._run(purge))

    async def aclose(self) -> None:
        """Close the connection."""
        await self._pg.aclose()


def default_archive_path(data_dir: str | Path) -> Path:
    """Where a process archives when no archive URL is set: ``<data_dir>/calls-archive.db``."""
    return Path(data_dir) / "calls-archive.db"


_SQLITE_URL = "sqlite:///"


def default_archive_url(data_dir: str | Path) -> str:
    """:func:`default_archive_path` as a URL with an absolute path (``sqlite:////abs/dir/calls-archive.db``)."""
    return _SQLITE_URL + str(default_archive_path(Path(data_dir).resolve()))


def open_archive(url: str | None, data_dir: str | Path) -> Archive:
    """The archive at ``url`` (the ``AYBIZA_ARCHIVE_URL`` setting).

    ``postgresql://...`` or ``postgres://...``: PostgreSQL. ``sqlite:///path``:
    a SQLite file; what follows the third slash is the path, so
    ``sqlite:////var/lib/aybiza/calls.db`` is absolute and ``sqlite:///calls.db``
    relative to the working directory. Empty or None:
    :func:`default_archive_path`. Anything else is a ConfigError.
    """
    url = (url or "").strip()
    if not url:
        return SQLiteArchive(default_archive_path(data_dir))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresArchive(url)
    if url.startswith(_SQLITE_URL) and len(url) > len(_SQLITE_URL):
        return SQLiteArchive(Path(url[len(_SQLITE_URL):]))
    # Only the scheme is named: the rest of a URL may hold a password.
    scheme = f"scheme {url.split(':', 1)[0]}:" if ":" in url else "no scheme"
    raise ConfigError(f"AYBIZA_ARCHIVE_URL: unsupported archive URL ({scheme}); "
                      "use postgresql://user:password@host/db or sqlite:///path/to/file.db")
