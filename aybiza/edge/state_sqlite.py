"""Live calls in a SQLite file, for processes on one machine (the default state backend).

WAL with ``synchronous=NORMAL``: a write costs tens of µs and survives a
process crash, so writes run inline on the event loop. Each write is one
``UPDATE ... WHERE owner AND version`` (fenced, idempotent). Owners are found
dead through a ``flock`` each process holds on its own lock file: the kernel
drops it when the process dies, even on SIGKILL. The file and its WAL are
mode 0600 in a 0700 directory (:mod:`aybiza.private`): they hold phone numbers.

Beside the live calls, ``offered_calls`` keeps each call ``/twiml`` sent here
until its stream starts (:class:`~aybiza.edge.records.Offer`), so a process
killed in between, or a stream that never arrives, still leaves a record.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from ..private import private_dir, private_sqlite
from .records import CallRecord, Offer
from .state import OWNER_PATTERN, CallFenced, CallStateError, StateBackend, stored_record

__all__ = ["SQLiteState"]

log = logging.getLogger("aybiza.edge.state_sqlite")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_calls (
    call_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS offered_calls (
    call_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    offered_at REAL NOT NULL,
    data TEXT NOT NULL
);
"""


P = ParamSpec("P")
R = TypeVar("R")


def _sqlite_errors(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn ``sqlite3.Error`` (locked for too long, disk full) into :class:`CallStateError`."""

    @functools.wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except sqlite3.Error as error:
            raise CallStateError(f"sqlite call state: {type(error).__name__}: {error}") from error

    return guarded


class SQLiteState(StateBackend):
    """Live calls in a SQLite file: WAL, ``synchronous=NORMAL``, writes inline (tens of µs)."""

    kind = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.owners_dir = self.path.with_name(self.path.name + ".owners")
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._owner: str | None = None

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection."""
        if self._db is None:
            raise CallStateError(f"call state {self.path} is not open")
        return self._db

    async def open(self, owner: str | None) -> None:
        """Open the file (WAL, NORMAL) and take this process's owner lock."""
        private_sqlite(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        private_sqlite(self.path)  # side files an older version left wider
        self._db = db
        if owner is not None:
            private_dir(self.owners_dir)
            fd = os.open(self.owners_dir / f"{owner}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._lock_fd, self._owner = fd, owner

    def _snapshot(self, record: CallRecord) -> tuple[Any, ...]:
        return (record.owner, record.status, record.version, record.updated_at, record.to_json(), record.call_id)

    @_sqlite_errors
    async def create(self, record: CallRecord) -> bool:
        """INSERT unless the call exists; its offer, if one was kept, is done with.

        (Two statements: an offer left by a crash between them names a live call, which recovery skips.)
        """
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO live_calls (owner, status, version, updated_at, data, call_id)"
            " VALUES (?, ?, ?, ?, ?, ?)", self._snapshot(record))
        self.db.execute("DELETE FROM offered_calls WHERE call_id = ?", (record.call_id,))
        return cursor.rowcount == 1

    @_sqlite_errors
    async def offer(self, owner: str, offer: Offer) -> None:
        """Keep the offer until :meth:`create` (or :meth:`drop_offer`); a repeated webhook renews it."""
        self.db.execute("INSERT OR REPLACE INTO offered_calls (call_id, owner, offered_at, data) VALUES (?, ?, ?, ?)",
                        (offer.call_sid, owner, offer.offered_at, offer.to_json()))

    @_sqlite_errors
    async def offers(self) -> list[tuple[str, Offer]]:
        """Offers whose call was never created, oldest first (an unreadable one is dropped, and logged)."""
        kept: list[tuple[str, Offer]] = []
        for call_id, owner, data in self.db.execute(
                "SELECT call_id, owner, data FROM offered_calls ORDER BY offered_at").fetchall():
            try:
                kept.append((owner, Offer.from_json(data)))
            except (ValueError, KeyError, TypeError) as error:
                log.warning("dropped the unreadable offer of call %r: %s", call_id, error)
                self.db.execute("DELETE FROM offered_calls WHERE call_id = ?", (call_id,))
        return kept

    @_sqlite_errors
    async def drop_offer(self, call_id: str) -> None:
        """DELETE the offer."""
        self.db.execute("DELETE FROM offered_calls WHERE call_id = ?", (call_id,))

    @_sqlite_errors
    async def write(self, record: CallRecord) -> bool:
        """One fenced UPDATE (owner, active, older version)."""
        cursor = self.db.execute(
            "UPDATE live_calls SET owner = ?, status = ?, version = ?, updated_at = ?, data = ?"
            " WHERE call_id = ? AND owner = ?1 AND status = 'active' AND version < ?3",
            self._snapshot(record))
        if cursor.rowcount == 1:
            return True
        row = self.db.execute("SELECT owner, status, version FROM live_calls WHERE call_id = ?",
                              (record.call_id,)).fetchone()
        if row is None:
            return False
        owner, status, version = row
        if owner != record.owner:
            raise CallFenced(f"call {record.call_id} is owned by {owner}, not {record.owner}")
        if status != "active":
            raise CallFenced(f"call {record.call_id} is {status}")
        return True  # same or newer version already stored: a retry

    @_sqlite_errors
    async def take_over(self, call_id: str, owner: str, *, expect_owner: str | None = None) -> CallRecord | None:
        """Claim an active call in one IMMEDIATE transaction."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT owner, status, version, data FROM live_calls WHERE call_id = ?",
                             (call_id,)).fetchone()
            if row is None or row[1] != "active" or (expect_owner is not None and row[0] != expect_owner):
                db.execute("ROLLBACK")
                return None
            record = stored_record(row[3], owner=owner, status="active", version=int(row[2]) + 1)
            record.updated_at = time.time()
            db.execute("UPDATE live_calls SET owner = ?, status = ?, version = ?, updated_at = ?, data = ?"
                       " WHERE call_id = ?", self._snapshot(record))
            db.execute("COMMIT")
            return record
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @_sqlite_errors
    async def read(self, call_id: str) -> CallRecord | None:
        """The live record, or None."""
        row = self.db.execute("SELECT owner, status, version, data FROM live_calls WHERE call_id = ?",
                              (call_id,)).fetchone()
        return None if row is None else stored_record(row[3], owner=row[0], status=row[1], version=row[2])

    @_sqlite_errors
    async def remove(self, call_id: str, owner: str) -> None:
        """DELETE if ``owner`` still owns it."""
        self.db.execute("DELETE FROM live_calls WHERE call_id = ? AND owner = ?", (call_id, owner))

    @_sqlite_errors
    async def live(self) -> list[CallRecord]:
        """Every live record in the file."""
        rows = self.db.execute("SELECT owner, status, version, data FROM live_calls ORDER BY updated_at").fetchall()
        return [stored_record(data, owner=owner, status=status, version=version)
                for owner, status, version, data in rows]

    async def owner_alive(self, owner: str) -> bool:
        """True while the process that took ``owner``'s lock file runs (its flock is held)."""
        if owner == self._owner:
            return True
        if not OWNER_PATTERN.fullmatch(owner):
            return False
        path = self.owners_dir / f"{owner}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return True
            raise
        else:
            path.unlink(missing_ok=True)  # its process is gone: clean up
            return False
        finally:
            os.close(fd)

    async def aclose(self) -> None:
        """Close the database and release the owner lock."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            if self._owner is not None:
                (self.owners_dir / f"{self._owner}.lock").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None
