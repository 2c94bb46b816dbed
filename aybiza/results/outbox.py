"""The durable webhook outbox, in the call archive's own database (a SQLite table or a PostgreSQL table).

A delivery is written in the same database as the archived record, so
whatever keeps the records keeps the deliveries: a process that dies with
deliveries pending leaves them to the next one (or to another process on
the same archive), which retries them. Processes sharing an archive share
the outbox; a delivery is *claimed* with a lease before it is sent, so two
processes never send it at once, and a claim whose process died expires.

Rows move ``pending`` → ``delivered`` or ``failed`` (attempts exhausted);
they keep the call id, the agent, the target, attempts and the last error,
so an operator can see what did not get through. The record in a row is
the one the archive stored (redacted as stored).
"""

from __future__ import annotations

import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..edge.archive import Archive, PostgresArchive, SQLiteArchive
from ..edge.databases import PostgresConnection, SQLiteFile
from ..errors import ConfigError

__all__ = ["Delivery", "DeliveryStatus", "Outbox", "PostgresOutbox", "SQLiteOutbox", "open_outbox"]

T = TypeVar("T")
DeliveryStatus = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery: a call's stored record, where it goes, and how far it got."""

    id: str
    call_id: str
    agent_id: str
    url: str
    spec: str  # the agent's webhook block as JSON, as it was when the call ended
    record: str  # the call record as the archive stored it (JSON)
    body: str | None = None  # the JSON sent; built at the first attempt (summary, fields) then fixed
    status: DeliveryStatus = "pending"
    attempts: int = 0
    next_at: float = 0.0
    last_error: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


_COLUMNS = ("id", "call_id", "agent_id", "url", "spec", "record", "body", "status", "attempts", "next_at",
            "last_error", "created_at", "updated_at")
_SELECT = ", ".join(_COLUMNS)


def _delivery(row: tuple[Any, ...]) -> Delivery:
    values = dict(zip(_COLUMNS, row, strict=True))
    return Delivery(**{**values, "attempts": int(values["attempts"]), "next_at": float(values["next_at"]),
                       "created_at": float(values["created_at"]), "updated_at": float(values["updated_at"])})


class Outbox(ABC):
    """Pending webhook deliveries, durable across restarts."""

    @abstractmethod
    async def add(self, delivery: Delivery) -> bool:
        """Store ``delivery`` (committed before returning); False if its id is there already (idempotent)."""

    @abstractmethod
    async def claim(self, *, limit: int, lease_s: float, now: float | None = None) -> list[Delivery]:
        """Pending deliveries that are due and not claimed by a live process; claimed for ``lease_s``."""

    @abstractmethod
    async def save(self, delivery: Delivery) -> None:
        """Write ``delivery``'s state (status, attempts, next attempt, body, error) and release its claim."""

    @abstractmethod
    async def get(self, delivery_id: str) -> Delivery | None:
        """The delivery with this id, or None."""

    @abstractmethod
    async def list(self, *, status: DeliveryStatus | None = None, limit: int = 100) -> list[Delivery]:
        """Deliveries, oldest first, optionally of one status."""

    async def aclose(self) -> None:
        """Close connections."""
        return None


def _schema(table: str, real: str) -> str:
    """The outbox table in either database (they differ in the table's name and the float type)."""
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    id TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    url TEXT NOT NULL,
    spec TEXT NOT NULL,
    record TEXT NOT NULL,
    body TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at {real} NOT NULL,
    last_error TEXT NOT NULL,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    lease_until {real} NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS {table}_due ON {table} (next_at) WHERE status = 'pending';
"""


_SQLITE_SCHEMA = _schema("webhook_outbox", "REAL")


class SQLiteOutbox(Outbox):
    """The outbox as a table in the SQLite archive file (WAL, ``synchronous=FULL``), used from worker threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = SQLiteFile(self.path, _SQLITE_SCHEMA)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.run(fn)

    async def add(self, delivery: Delivery) -> bool:
        """Insert unless the id exists."""
        row = tuple(getattr(delivery, name) for name in _COLUMNS)
        sql = f"INSERT INTO webhook_outbox ({_SELECT}) VALUES ({', '.join('?' * len(_COLUMNS))}) ON CONFLICT DO NOTHING"
        return bool(await self._run(lambda db: db.execute(sql, row).rowcount))

    async def claim(self, *, limit: int, lease_s: float, now: float | None = None) -> list[Delivery]:
        """One ``UPDATE … RETURNING``: atomic against other processes on the same file."""
        at = time.time() if now is None else now
        sql = (f"UPDATE webhook_outbox SET lease_until = ? WHERE id IN (SELECT id FROM webhook_outbox"
               f" WHERE status = 'pending' AND next_at <= ? AND lease_until <= ? ORDER BY next_at LIMIT ?)"
               f" RETURNING {_SELECT}")
        rows = await self._run(lambda db: db.execute(sql, (at + lease_s, at, at, limit)).fetchall())
        return sorted((_delivery(row) for row in rows), key=lambda d: d.next_at)

    async def save(self, delivery: Delivery) -> None:
        """Update the row and drop the lease."""
        sql = ("UPDATE webhook_outbox SET body = ?, status = ?, attempts = ?, next_at = ?, last_error = ?,"
               " updated_at = ?, lease_until = 0 WHERE id = ?")
        args = (delivery.body, delivery.status, delivery.attempts, delivery.next_at, delivery.last_error,
                delivery.updated_at, delivery.id)
        await self._run(lambda db: db.execute(sql, args))

    async def get(self, delivery_id: str) -> Delivery | None:
        """The row, or None."""
        row = await self._run(lambda db: db.execute(
            f"SELECT {_SELECT} FROM webhook_outbox WHERE id = ?", (delivery_id,)).fetchone())
        return None if row is None else _delivery(row)

    async def list(self, *, status: DeliveryStatus | None = None, limit: int = 100) -> list[Delivery]:
        """Rows, oldest first."""
        where, args = (" WHERE status = ?", (status,)) if status else ("", ())
        rows = await self._run(lambda db: db.execute(
            f"SELECT {_SELECT} FROM webhook_outbox{where} ORDER BY created_at LIMIT ?", (*args, limit)).fetchall())
        return [_delivery(row) for row in rows]

    async def aclose(self) -> None:
        """Close the connection."""
        await self._file.aclose()


_PG_SCHEMA = _schema("aybiza_webhook_outbox", "DOUBLE PRECISION")


async def _pg_prepare(conn: Any) -> None:
    await conn.execute(_PG_SCHEMA)


class PostgresOutbox(Outbox):
    """The outbox as a table in the PostgreSQL archive database (psycopg 3; claims with ``SKIP LOCKED``)."""

    def __init__(self, url: str, *, connect_timeout_s: float = 3.0) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._pg = PostgresConnection(url, connect_timeout_s=connect_timeout_s, prepare=_pg_prepare)

    async def _run(self, sql: str, args: tuple[Any, ...], *, fetch: bool = False) -> list[tuple[Any, ...]]:
        async def execute(conn: Any) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(sql, args)
            return list(await cursor.fetchall()) if fetch else [(cursor.rowcount,)]

        return await self._pg.run(execute)

    async def add(self, delivery: Delivery) -> bool:
        """Insert unless the id exists."""
        row = tuple(getattr(delivery, name) for name in _COLUMNS)
        sql = (f"INSERT INTO aybiza_webhook_outbox ({_SELECT}) VALUES ({', '.join(['%s'] * len(_COLUMNS))})"
               " ON CONFLICT (id) DO NOTHING")
        return bool((await self._run(sql, row))[0][0])

    async def claim(self, *, limit: int, lease_s: float, now: float | None = None) -> list[Delivery]:
        """``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING``."""
        at = time.time() if now is None else now
        sql = (f"UPDATE aybiza_webhook_outbox SET lease_until = %s WHERE id IN (SELECT id FROM aybiza_webhook_outbox"
               " WHERE status = 'pending' AND next_at <= %s AND lease_until <= %s ORDER BY next_at LIMIT %s"
               f" FOR UPDATE SKIP LOCKED) RETURNING {_SELECT}")
        rows = await self._run(sql, (at + lease_s, at, at, limit), fetch=True)
        return sorted((_delivery(row) for row in rows), key=lambda d: d.next_at)

    async def save(self, delivery: Delivery) -> None:
        """Update the row and drop the lease."""
        sql = ("UPDATE aybiza_webhook_outbox SET body = %s, status = %s, attempts = %s, next_at = %s,"
               " last_error = %s, updated_at = %s, lease_until = 0 WHERE id = %s")
        await self._run(sql, (delivery.body, delivery.status, delivery.attempts, delivery.next_at,
                              delivery.last_error, delivery.updated_at, delivery.id))

    async def get(self, delivery_id: str) -> Delivery | None:
        """The row, or None."""
        rows = await self._run(f"SELECT {_SELECT} FROM aybiza_webhook_outbox WHERE id = %s", (delivery_id,),
                               fetch=True)
        return _delivery(rows[0]) if rows else None

    async def list(self, *, status: DeliveryStatus | None = None, limit: int = 100) -> list[Delivery]:
        """Rows, oldest first."""
        where, args = (" WHERE status = %s", (status,)) if status else ("", ())
        rows = await self._run(f"SELECT {_SELECT} FROM aybiza_webhook_outbox{where} ORDER BY created_at LIMIT %s",
                               (*args, limit), fetch=True)
        return [_delivery(row) for row in rows]

    async def aclose(self) -> None:
        """Close the connection."""
        await self._pg.aclose()


def open_outbox(archive: Archive) -> Outbox:
    """The outbox in the same database as ``archive`` (SQLite file or PostgreSQL URL)."""
    if isinstance(archive, SQLiteArchive):
        return SQLiteOutbox(archive.path)
    if isinstance(archive, PostgresArchive):
        return PostgresOutbox(archive.url)
    raise ConfigError(f"no webhook outbox for a {archive.kind} archive")


def with_state(delivery: Delivery, **changes: Any) -> Delivery:
    """``delivery`` with ``changes`` and a fresh ``updated_at``."""
    return replace(delivery, updated_at=time.time(), **changes)
