"""The connections behind the archive's database, shared by everything kept in it.

The call archive and the webhook outbox live in the same database (a SQLite
file or PostgreSQL) and need the same handling: a SQLite file private to the
owner (:mod:`aybiza.private`), in WAL mode with ``synchronous=FULL`` (a write
has reached the disk when the call returns), one connection serialised by a
lock and used from worker threads; or one psycopg connection, reopened once
when it broke. Each store brings only its schema.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ..private import private_sqlite

__all__ = ["PostgresConnection", "SQLiteFile"]

T = TypeVar("T")


class SQLiteFile:
    """One durable connection to a private SQLite file, used by one thread at a time."""

    def __init__(self, path: str | Path, schema: str) -> None:
        self.path = Path(path)
        private_sqlite(self.path)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(schema)

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` under the lock, in this thread (scripts and recovery outside an event loop)."""
        with self._lock:
            return fn(self.db)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` under the lock in a worker thread: a durable commit never blocks the event loop."""
        return await anyio.to_thread.run_sync(self.call, fn)

    async def aclose(self) -> None:
        """Close the connection."""
        await self.run(lambda db: db.close())


class PostgresConnection:
    """One psycopg 3 asyncio connection (autocommit), prepared on (re)connect, retried once if it broke."""

    def __init__(self, url: str, *, connect_timeout_s: float, prepare: Callable[[Any], Awaitable[None]]) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._prepare = prepare  # creates or migrates the store's tables on each new connection
        self._conn: Any = None
        self._lock = anyio.Lock()

    async def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s)))
            await self._prepare(self._conn)
        return self._conn

    async def run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """``await fn(connection)``, one at a time; a broken connection is reopened and ``fn`` tried once more."""
        import psycopg

        async with self._lock:
            for attempt in (1, 2):
                conn = await self._connection()
                try:
                    return await fn(conn)
                except psycopg.OperationalError:
                    await conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Close the connection."""
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
