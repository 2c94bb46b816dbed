"""Durable call state: start / update / end / archive, with crash recovery and hand-off.

A :class:`CallStore` is the process's single writer for the calls it owns
(the design's Durable Object). It keeps each owned call's
:class:`~aybiza.edge.records.CallRecord` in memory and writes a snapshot to
a *state backend* on every change; the backend makes each write one atomic,
fenced step (it lands only if this process still owns the call and the
version is newer), so a retried write is a no-op and a stale owner is
refused.

Backends:

* :class:`SQLiteState` (default) — WAL, ``synchronous=NORMAL`` (tens of µs,
  durable against a process crash), one ``UPDATE ... WHERE owner AND
  version`` per write, run inline on the event loop. Owners are found dead
  through a ``flock`` each process holds on its own lock file: the kernel
  drops it when the process dies, even on SIGKILL.
* :class:`RedisState` — a hash per call (``aybiza:call:{sid}:state``)
  changed only by Lua scripts (check owner, status and version, then write,
  in one step), an index of live calls, and an owner key with a short TTL
  that :meth:`CallStore.keepalive` refreshes. Several processes on one
  Redis share calls: another process can :meth:`~CallStore.resume` a call
  and continue its conversation.

``end()`` commits the final record to the durable archive (SQLite with
``synchronous=FULL`` or PostgreSQL) before it returns; if the archive is
down, the record is fsync'ed to a local outbox and archived later — Redis
alone is never trusted with it (it can lose acknowledged writes on failover).
``recover_interrupted()`` archives the calls of dead processes as
``interrupted`` with everything they had written.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import logging
import os
import re
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread
from redis.asyncio import Redis

from ..errors import CallError
from ..pipeline.context import CallContext
from .archive import Archive, open_archive
from .records import CallRecord, TurnRecord, final_fields, record_from_context
from .redis_util import REDIS_ERRORS, redis_client

__all__ = [
    "CallFenced",
    "CallStateError",
    "CallStore",
    "RedisState",
    "SQLiteState",
    "StateBackend",
    "open_call_store",
    "read_calls",
]

log = logging.getLogger("aybiza.edge.calls")

_OWNER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FIELDS = frozenset(CallRecord.model_fields) - {"call_id", "status", "version", "owner", "turns"}


class CallStateError(CallError):
    """The call state store could not be read or written."""


class CallFenced(CallStateError):
    """Another process owns this call now (or it already ended): this process must stop writing it."""


class StateBackend(ABC):
    """Where live call records are kept between updates (atomic, fenced snapshot writes)."""

    kind: str = "state"

    @abstractmethod
    async def open(self, owner: str | None) -> None:
        """Prepare storage; register ``owner`` as alive (None = read-only use)."""

    @abstractmethod
    async def create(self, record: CallRecord) -> bool:
        """Store a new live record; False if the call id exists already."""

    @abstractmethod
    async def write(self, record: CallRecord) -> bool:
        """Replace the record if ``record.owner`` owns it, it is active and the version is newer.

        Returns False if the call is missing; raises :class:`CallFenced` if it
        is owned by someone else or no longer active. A write whose version is
        not newer is a no-op (a retry) and returns True.
        """

    @abstractmethod
    async def take_over(self, call_id: str, owner: str, *, expect_owner: str | None = None) -> CallRecord | None:
        """Make ``owner`` the owner of an active call (version + 1); None if it is not active."""

    @abstractmethod
    async def read(self, call_id: str) -> CallRecord | None:
        """The live record, or None."""

    @abstractmethod
    async def remove(self, call_id: str, owner: str) -> None:
        """Forget the live record (after it was archived) if ``owner`` still owns it."""

    @abstractmethod
    async def live(self) -> list[CallRecord]:
        """Every live record, of every process."""

    @abstractmethod
    async def owner_alive(self, owner: str) -> bool:
        """Whether the process ``owner`` is still running."""

    async def keepalive(self) -> None:
        """Keep this process's owner registration alive (runs until cancelled)."""
        await anyio.sleep_forever()

    async def touch(self) -> None:
        """Renew the owner registration if it is due (called on writes, so a store without
        :meth:`keepalive` running stays alive while it has calls)."""
        return None

    async def aclose(self) -> None:
        """Release the owner registration and connections."""
        return None


# -- SQLite ------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_calls (
    call_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL,
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SQLITE_SCHEMA)
        self._db = db
        if owner is not None:
            self.owners_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.owners_dir / f"{owner}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._lock_fd, self._owner = fd, owner

    def _snapshot(self, record: CallRecord) -> tuple[Any, ...]:
        return (record.owner, record.status, record.version, record.updated_at, record.to_json(), record.call_id)

    @_sqlite_errors
    async def create(self, record: CallRecord) -> bool:
        """INSERT unless the call exists."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO live_calls (owner, status, version, updated_at, data, call_id)"
            " VALUES (?, ?, ?, ?, ?, ?)", self._snapshot(record))
        return cursor.rowcount == 1

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
            record = _loaded(row[3], owner=owner, status="active", version=int(row[2]) + 1)
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
        return None if row is None else _loaded(row[3], owner=row[0], status=row[1], version=row[2])

    @_sqlite_errors
    async def remove(self, call_id: str, owner: str) -> None:
        """DELETE if ``owner`` still owns it."""
        self.db.execute("DELETE FROM live_calls WHERE call_id = ? AND owner = ?", (call_id, owner))

    @_sqlite_errors
    async def live(self) -> list[CallRecord]:
        """Every live record in the file."""
        rows = self.db.execute("SELECT owner, status, version, data FROM live_calls ORDER BY updated_at").fetchall()
        return [_loaded(data, owner=owner, status=status, version=version) for owner, status, version, data in rows]

    async def owner_alive(self, owner: str) -> bool:
        """True while the process that took ``owner``'s lock file runs (its flock is held)."""
        if owner == self._owner:
            return True
        if not _OWNER.fullmatch(owner):
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


def _loaded(data: str | bytes, *, owner: Any, status: Any, version: Any) -> CallRecord:
    """A stored record with the authoritative owner, status and version columns applied."""
    record = CallRecord.from_json(data)
    record.owner = owner.decode() if isinstance(owner, bytes) else str(owner)
    record.status = (status.decode() if isinstance(status, bytes) else str(status))  # type: ignore[assignment]
    record.version = int(version)
    return record


# -- Redis -------------------------------------------------------------------------

# KEYS: state. ARGV: owner, version, status, updated_at, record, ttl_ms.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'version', ARGV[2], 'status', ARGV[3],
           'updated_at', ARGV[4], 'record', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""

# KEYS: state. ARGV: owner, version, status, updated_at, record, ttl_ms.
# Returns {1} written, {2} not newer (a retry), {0} missing, {-1, owner} fenced, {-2, status} not active.
_WRITE = """
local cur = redis.call('HMGET', KEYS[1], 'owner', 'status', 'version')
if not cur[1] then return {0} end
if cur[1] ~= ARGV[1] then return {-1, cur[1]} end
if cur[2] ~= 'active' then return {-2, cur[2]} end
if tonumber(cur[3]) >= tonumber(ARGV[2]) then return {2} end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'version', ARGV[2], 'updated_at', ARGV[4], 'record', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {1}
"""

# KEYS: state. ARGV: new owner, expected owner ('' = any), updated_at, ttl_ms.
# Returns {1, version, record} or {0} missing / {-1, owner} / {-2, status}.
_TAKE_OVER = """
local cur = redis.call('HMGET', KEYS[1], 'owner', 'status', 'version', 'record')
if not cur[1] then return {0} end
if cur[2] ~= 'active' then return {-2, cur[2]} end
if ARGV[2] ~= '' and cur[1] ~= ARGV[2] then return {-1, cur[1]} end
local v = tonumber(cur[3]) + 1
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'version', v, 'updated_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, v, cur[4]}
"""

# KEYS: state. ARGV: owner.
_REMOVE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisState(StateBackend):
    """Live calls on Redis: a hash per call changed by Lua, a live index, owner keys with a lease."""

    kind = "redis"

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "aybiza:",
        ttl_s: float = 86400.0,
        lease_s: float = 10.0,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_ms = int(ttl_s * 1000)
        self.lease_s = lease_s
        self._owns_client = owns_client
        self._owner: str | None = None
        self._refreshed_at = 0.0
        self._create = client.register_script(_CREATE)
        self._write = client.register_script(_WRITE)
        self._take_over = client.register_script(_TAKE_OVER)
        self._remove = client.register_script(_REMOVE)

    def _state_key(self, call_id: str) -> str:
        return f"{self.prefix}call:{{{call_id}}}:state"

    @property
    def _index(self) -> str:
        return f"{self.prefix}calls:live"

    def _owner_key(self, owner: str) -> str:
        return f"{self.prefix}owner:{owner}"

    async def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return await fn()
        except REDIS_ERRORS as error:
            raise CallStateError(f"redis call state {what} failed: {type(error).__name__}: {error}") from error

    async def open(self, owner: str | None) -> None:
        """Register ``owner`` as alive for one lease."""
        self._owner = owner
        if owner is not None:
            await self._refresh()

    async def _refresh(self) -> None:
        if self._owner is not None:
            key, lease = self._owner_key(self._owner), int(self.lease_s * 1000)
            await self._call("lease", lambda: self.client.set(key, b"1", px=lease))
            self._refreshed_at = time.monotonic()

    async def touch(self) -> None:
        """Renew the owner lease if a third of it has passed since the last renewal."""
        if self._owner is not None and time.monotonic() - self._refreshed_at >= self.lease_s / 3:
            try:
                await self._refresh()
            except CallStateError as error:
                log.warning("%s", error)

    async def keepalive(self) -> None:
        """Renew the owner lease every third of its length until cancelled."""
        while True:
            await anyio.sleep(self.lease_s / 3)
            try:
                await self._refresh()
            except CallStateError as error:
                log.warning("%s", error)

    def _args(self, record: CallRecord) -> list[Any]:
        return [record.owner, record.version, record.status, repr(record.updated_at), record.to_json(), self.ttl_ms]

    async def create(self, record: CallRecord) -> bool:
        """Index the call, then create its hash (so a crash in between leaves only an index entry)."""
        key = self._state_key(record.call_id)
        await self._call("index", lambda: self.client.zadd(self._index, {record.call_id: record.started_at}))
        created = await self._call("create", lambda: self._create(keys=[key], args=self._args(record)))
        return bool(created)

    async def write(self, record: CallRecord) -> bool:
        """The fenced Lua write."""
        key = self._state_key(record.call_id)
        result = await self._call("write", lambda: self._write(keys=[key], args=self._args(record)))
        code = int(result[0])
        if code in (1, 2):
            return True
        if code == 0:
            return False
        if code == -1:
            raise CallFenced(f"call {record.call_id} is owned by {_text(result[1])}, not {record.owner}")
        raise CallFenced(f"call {record.call_id} is {_text(result[1])}")

    async def take_over(self, call_id: str, owner: str, *, expect_owner: str | None = None) -> CallRecord | None:
        """Claim an active call (Lua: check status and expected owner, bump the version)."""
        key = self._state_key(call_id)
        now = time.time()
        result = await self._call("take over", lambda: self._take_over(
            keys=[key], args=[owner, expect_owner or "", repr(now), self.ttl_ms]))
        if int(result[0]) != 1:
            return None
        record = _loaded(result[2], owner=owner, status="active", version=result[1])
        record.updated_at = now
        return record

    async def read(self, call_id: str) -> CallRecord | None:
        """The live record, or None."""
        key = self._state_key(call_id)
        fields = await self._call("read", lambda: self.client.hmget(key, ["owner", "status", "version", "record"]))
        if fields[0] is None or fields[3] is None:
            return None
        return _loaded(fields[3], owner=fields[0], status=fields[1], version=fields[2])

    async def remove(self, call_id: str, owner: str) -> None:
        """Delete the hash if ``owner`` owns it, then drop it from the live index."""
        key = self._state_key(call_id)
        await self._call("remove", lambda: self._remove(keys=[key], args=[owner]))
        if await self.read(call_id) is None:
            await self._call("unindex", lambda: self.client.zrem(self._index, call_id))

    async def live(self) -> list[CallRecord]:
        """Every indexed live record (index entries without a record are dropped)."""
        ids = [_text(i) for i in await self._call("index", lambda: self.client.zrange(self._index, 0, -1))]
        if not ids:
            return []

        async def read_all() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for call_id in ids:
                    pipe.hmget(self._state_key(call_id), ["owner", "status", "version", "record"])
                return list(await pipe.execute())

        records: list[CallRecord] = []
        gone: list[str] = []
        for call_id, fields in zip(ids, await self._call("read", read_all), strict=True):
            if fields[0] is None or fields[3] is None:
                gone.append(call_id)
            else:
                records.append(_loaded(fields[3], owner=fields[0], status=fields[1], version=fields[2]))
        if gone:
            await self._call("unindex", lambda: self.client.zrem(self._index, *gone))
        return records

    async def owner_alive(self, owner: str) -> bool:
        """True while ``owner``'s lease key exists."""
        if owner == self._owner:
            return True
        key = self._owner_key(owner)
        return bool(await self._call("lease", lambda: self.client.exists(key)))

    async def aclose(self) -> None:
        """Drop the owner lease (other processes may recover its calls at once) and close."""
        if self._owner is not None:
            key = self._owner_key(self._owner)
            try:
                await self.client.delete(key)
            except REDIS_ERRORS as error:
                log.warning("could not drop owner lease %s: %s", key, error)
            self._owner = None
        if self._owns_client:
            await self.client.aclose()


# -- the store ---------------------------------------------------------------------


class CallStore:
    """Start / update / end / archive calls; single writer for the calls this process owns.

    Writes to the state backend that fail for a reason other than fencing
    (Redis unreachable) are logged and repaired by the next write: a call
    never fails because its state store blipped. ``end`` is the exception:
    it returns only once the record is in the archive or the local outbox.
    """

    def __init__(
        self,
        state: StateBackend,
        archive: Archive,
        *,
        outbox_dir: str | Path | None = None,
        owner: str | None = None,
        readonly: bool = False,
    ) -> None:
        self.state = state
        self.archive = archive
        self.outbox_dir = Path(outbox_dir) if outbox_dir is not None else None
        self.owner = owner or uuid.uuid4().hex
        if not _OWNER.fullmatch(self.owner):
            raise ValueError(f"owner id {self.owner!r}: use letters, digits, '_' and '-' only")
        self.readonly = readonly
        self._owned: dict[str, CallRecord] = {}
        self._opened = False

    async def open(self) -> CallStore:
        """Open the backend and register this process as an owner (unless read-only)."""
        if not self._opened:
            await self.state.open(None if self.readonly else self.owner)
            self._opened = True
        return self

    async def __aenter__(self) -> CallStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close backend and archive (owned calls still live are recovered by the next process)."""
        await self.state.aclose()
        await self.archive.aclose()

    async def keepalive(self) -> None:
        """Keep this process's ownership alive (Redis lease); run it in a task until shutdown."""
        await self.state.keepalive()

    @property
    def owned(self) -> list[str]:
        """Ids of the calls this process owns now."""
        return list(self._owned)

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, record: CallRecord, *, after_version: int = 0) -> CallRecord:
        """Begin a call owned by this process; returns the stored record (version ``after_version + 1``)."""
        if record.call_id in self._owned:
            raise CallStateError(f"call {record.call_id} is already started here")
        record = record.model_copy(deep=True)
        now = time.time()
        record.owner, record.status, record.version, record.updated_at = self.owner, "active", after_version + 1, now
        try:
            created = await self.state.create(record)
        except CallStateError as error:
            log.warning("call %s: state not stored at start (%s); continuing in memory", record.call_id, error)
            created = True
        if not created:
            raise CallStateError(f"call {record.call_id} exists already (resume() takes a live call over)")
        self._owned[record.call_id] = record
        return record.model_copy(deep=True)

    async def start_call(self, ctx: CallContext) -> CallRecord:
        """:meth:`start` with a record built from the call's context."""
        return await self.start(record_from_context(ctx))

    async def open_call(self, ctx: CallContext) -> tuple[CallRecord, bool]:
        """Start the call, or continue it: ``(record, resumed)``.

        ``resumed`` is True when the call id is live in another process (a
        reconnecting stream: it is taken over) or already archived (its turns
        are carried on and the new record supersedes the archived one). A
        resumed call should not replay its greeting, and its model should be
        seeded with ``record.context()``.
        """
        owned = self._owned.get(ctx.call_id)
        if owned is not None:
            if await self._still_mine(owned):
                return owned.model_copy(deep=True), False
            self._owned.pop(ctx.call_id, None)  # taken over or ended by another process meanwhile
        try:
            resumed = await self.resume(ctx.call_id)
        except CallStateError as error:  # the state store is down: the call goes on in memory
            log.warning("call %s: cannot check for a live record (%s)", ctx.call_id, error)
            resumed = None
        if resumed is not None:
            return resumed, True
        record = record_from_context(ctx)
        try:
            archived = await self.archive.get(ctx.call_id)
        except Exception as error:  # the archive is down: end() will use the outbox
            log.warning("call %s: cannot read the archive (%s: %s)", ctx.call_id, type(error).__name__, error)
            archived = None
        if archived is None:
            return await self.start(record), False
        record.turns, record.started_at = archived.turns, archived.started_at
        return await self.start(record, after_version=archived.version), True

    async def update(self, call_id: str, *, turn: TurnRecord | None = None, **changes: Any) -> None:
        """Apply ``changes`` (record fields) and ``turn`` (added or replaced by id); write the snapshot.

        The change is applied in memory before the first await, so it is part
        of the final record even if the write is cancelled or fails.
        """
        record = self._mine(call_id)
        self._apply(record, turn, changes)
        await self._write(record)

    async def end(self, call_id: str, *, outcome: str, turn: TurnRecord | None = None, **changes: Any) -> CallRecord:
        """End the call: final fields, ``ended`` in the state store, then committed to the archive.

        Returns after the archive commit (or, if the archive is down, after the
        record was fsync'ed to the outbox). Raises :class:`CallFenced` if
        another process took the call over.
        """
        record = self._mine(call_id)
        self._apply(record, turn, changes)
        record.status, record.outcome, record.ended_at = "ended", outcome, record.updated_at
        try:
            await self._write(record)
        except CallFenced:
            self._owned.pop(call_id, None)
            raise
        await self._archive(record)
        self._owned.pop(call_id, None)
        try:
            await self.state.remove(call_id, self.owner)
        except CallStateError as error:
            log.warning("call %s archived; live state not removed (%s): recovery will", call_id, error)
        return record

    async def end_call(
        self,
        ctx: CallContext,
        reason: str,
        *,
        cost: Mapping[str, Any] | None = None,
        quality: Mapping[str, Any] | None = None,
    ) -> CallRecord:
        """:meth:`end` with the final fields taken from ``ctx`` (starts the record if it never was)."""
        if ctx.call_id not in self._owned:
            await self.start_call(ctx)
        return await self.end(ctx.call_id, outcome=reason, **final_fields(ctx, cost=cost, quality=quality))

    async def resume(self, call_id: str) -> CallRecord | None:
        """Take over a live call from another process (its conversation comes with it); None if not live."""
        record = await self.state.take_over(call_id, self.owner)
        if record is None:
            return None
        self._owned[call_id] = record
        return record.model_copy(deep=True)

    # -- reading -------------------------------------------------------------------

    async def get(self, call_id: str) -> CallRecord | None:
        """The call's record: owned here, live elsewhere, or archived; None if unknown."""
        record = self._owned.get(call_id)
        if record is not None:
            return record.model_copy(deep=True)
        try:
            record = await self.state.read(call_id)
        except CallStateError as error:
            log.warning("%s", error)
            record = None
        if record is not None and record.status == "active":
            return record
        return await self.archive.get(call_id) or record

    async def context(self, call_id: str) -> list[dict[str, str]]:
        """The conversation so far (``role``/``text``), to seed a model when a call moves processes."""
        record = await self.get(call_id)
        return [] if record is None else record.context()

    async def live(self) -> list[CallRecord]:
        """Live calls of every process sharing the state backend (this one's from memory)."""
        try:
            records = {r.call_id: r for r in await self.state.live() if r.status == "active"}
        except CallStateError as error:
            log.warning("%s", error)
            records = {}
        records.update((call_id, r.model_copy(deep=True)) for call_id, r in self._owned.items())
        return sorted(records.values(), key=lambda r: r.started_at, reverse=True)

    async def list_calls(
        self, *, limit: int = 50, offset: int = 0, status: str | None = None, agent_id: str | None = None
    ) -> dict[str, Any]:
        """The ``GET /api/calls`` body: live calls and archived calls (newest first) as summaries."""
        archived = await self.archive.list(limit=limit, offset=offset, status=status, agent_id=agent_id)
        live = [r for r in await self.live() if agent_id is None or r.agent_id == agent_id]
        return {
            "active": [r.summary() for r in live] if status in (None, "active") else [],
            "calls": [r.summary() for r in archived],
            "limit": limit,
            "offset": offset,
            "archived_total": await self.archive.count(),
        }

    # -- recovery and retention ----------------------------------------------------

    async def recover_interrupted(self, *, min_idle_s: float = 0.0) -> list[str]:
        """Archive the live calls of dead processes as ``interrupted``; return their ids.

        Run at startup (``min_idle_s=0``). Run periodically with a grace
        period (e.g. 30 s) so a stream reconnecting to another process can
        :meth:`resume` first. Also flushes the outbox.
        """
        await self.flush_outbox()
        recovered: list[str] = []
        now = time.time()
        for record in await self.state.live():
            if record.owner == self.owner or record.call_id in self._owned:
                continue
            if now - record.updated_at < min_idle_s or await self.state.owner_alive(record.owner):
                continue
            if record.status != "active":
                # Its process died between writing "ended" and removing it: archive what it wrote.
                await self._archive(record)
                await self.state.remove(record.call_id, record.owner)
                continue
            claimed = await self.state.take_over(record.call_id, self.owner, expect_owner=record.owner)
            if claimed is None:
                continue
            claimed.status, claimed.outcome = "interrupted", "interrupted"
            claimed.ended_at = record.updated_at
            await self._archive(claimed)
            await self.state.remove(claimed.call_id, self.owner)
            log.warning("call %s archived as interrupted (its process %s died)", claimed.call_id, record.owner)
            recovered.append(claimed.call_id)
        return recovered

    async def purge(self, older_than_days: float, *, now: float | None = None) -> int:
        """Retention: strip transcripts of archived calls that ended more than ``older_than_days`` ago."""
        return await self.archive.purge_transcripts(older_than_days, now=now)

    async def flush_outbox(self) -> int:
        """Archive records left in the outbox while the archive was down; return how many."""
        if self.outbox_dir is None or not self.outbox_dir.is_dir():
            return 0
        flushed = 0
        for path in sorted(self.outbox_dir.glob("*.json")):
            record = CallRecord.from_json(path.read_bytes())
            await self.archive.put(record)
            path.unlink()
            flushed += 1
        return flushed

    # -- internals -----------------------------------------------------------------

    async def _still_mine(self, record: CallRecord) -> bool:
        """Whether the backend agrees this process owns ``record`` (True when it cannot tell)."""
        try:
            live = await self.state.read(record.call_id)
        except CallStateError:
            return True
        if live is not None:
            return live.owner == self.owner
        archived = await self.archive.get(record.call_id)
        return archived is None or archived.version < record.version

    def _mine(self, call_id: str) -> CallRecord:
        record = self._owned.get(call_id)
        if record is None:
            raise CallStateError(f"call {call_id} is not owned by this process (start() or resume() it)")
        return record

    @staticmethod
    def _apply(record: CallRecord, turn: TurnRecord | None, changes: Mapping[str, Any]) -> None:
        unknown = set(changes) - _FIELDS
        if unknown:
            raise TypeError(f"not call record fields: {', '.join(sorted(unknown))}")
        for name, value in changes.items():
            setattr(record, name, value)
        if turn is not None:
            record.put_turn(turn)
        record.version += 1
        record.updated_at = time.time()

    async def _write(self, record: CallRecord) -> None:
        await self.state.touch()
        try:
            if not await self.state.write(record) and not await self.state.create(record):
                log.warning("call %s: live state vanished and could not be recreated", record.call_id)
        except CallFenced:
            self._owned.pop(record.call_id, None)
            raise
        except CallStateError as error:
            log.warning("call %s: state write failed (%s); the next write repairs it", record.call_id, error)

    async def _archive(self, record: CallRecord) -> None:
        """The output gate: the archive commit, or an fsync'ed outbox file if the archive is down."""
        try:
            await self.archive.put(record)
            return
        except Exception as error:
            if self.outbox_dir is None:
                raise
            log.error("call %s: archive failed (%s: %s); kept in the outbox", record.call_id,
                      type(error).__name__, error)
        await anyio.to_thread.run_sync(_write_durably, self.outbox_dir, record)


def _write_durably(directory: Path, record: CallRecord) -> None:
    """Write ``record`` to ``directory`` with fsync of the file and the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(record.call_id.encode()).hexdigest()[:32]
    final = directory / f"{name}.json"
    temp = directory / f".{name}.tmp"
    with open(temp, "wb") as handle:
        handle.write(record.to_json().encode())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def open_call_store(
    data_dir: str | Path,
    *,
    redis_url: str | None = None,
    archive_url: str | None = None,
    owner: str | None = None,
    readonly: bool = False,
    lease_s: float = 10.0,
    redis_prefix: str = "aybiza:",
) -> CallStore:
    """An open store: Redis state if ``redis_url`` else ``<data_dir>/calls-live.db``; archive per ``archive_url``.

    Pass ``redis_url_from_env()`` / ``archive_url_from_env()`` (``AYBIZA_REDIS_URL``,
    ``AYBIZA_ARCHIVE_URL``) or the settings' values. ``readonly`` (for the CLI)
    registers no owner, so it never looks like a live process.
    """
    data = Path(data_dir)
    state: StateBackend
    if redis_url:
        state = RedisState(redis_client(redis_url), prefix=redis_prefix, lease_s=lease_s, owns_client=True)
    else:
        state = SQLiteState(data / "calls-live.db")
    store = CallStore(state, open_archive(archive_url, data), outbox_dir=data / "outbox", owner=owner,
                      readonly=readonly)
    return await store.open()


async def read_calls(
    data_dir: str | Path,
    *,
    redis_url: str | None = None,
    archive_url: str | None = None,
    limit: int = 20,
    offset: int = 0,
    call_id: str | None = None,
) -> dict[str, Any]:
    """What ``aybiza calls`` prints: the call list, or one call's full record (read-only, no server needed).

    Returns the :meth:`CallStore.list_calls` body, or ``{"call": <record>}``
    (``{"call": None}`` when ``call_id`` is unknown).
    """
    store = await open_call_store(data_dir, redis_url=redis_url, archive_url=archive_url, readonly=True)
    try:
        if call_id is not None:
            record = await store.get(call_id)
            return {"call": None if record is None else record.model_dump(mode="json")}
        return await store.list_calls(limit=limit, offset=offset)
    finally:
        await store.aclose()
