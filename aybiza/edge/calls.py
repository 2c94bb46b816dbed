"""Durable call records: start / update / end / archive, with crash recovery and hand-off.

A :class:`CallStore` is the process's single writer for the calls it owns
(the design's Durable Object). It keeps each owned call's
:class:`~aybiza.edge.records.CallRecord` in memory and writes a snapshot to
a state backend (:mod:`aybiza.edge.state`) on every change: SQLite on one
machine, Redis when processes share calls (then another process can
:meth:`~CallStore.resume` a call and continue its conversation).

``end()`` commits the final record to the durable archive (SQLite with
``synchronous=FULL`` or PostgreSQL) before it returns; if the archive is
down, the record is fsync'ed to a local outbox and archived later — Redis
alone is never trusted with it (it can lose acknowledged writes on
failover; docs/routing.md §3.1). ``recover_interrupted()`` archives the
calls of dead processes as ``interrupted`` with everything they had written.

Processes that share state share an archive too: with Redis and no archive
URL, :func:`open_call_store` uses the archive URL registered in Redis (the
first process registers its own SQLite file), so a call ended by one
process is readable through any other.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from redis.asyncio import Redis

from ..errors import ConfigError, EndReason
from ..pipeline.context import CallContext
from ..private import private_dir
from ..routing.countries import locate_number
from .archive import Archive, default_archive_url, open_archive
from .records import CallRecord, Offer, TurnRecord, final_fields, record_from_context
from .redis_util import REDIS_ERRORS, redis_client
from .state import OWNER_PATTERN, CallFenced, CallStateError, StateBackend
from .state_redis import RedisState
from .state_sqlite import SQLiteState

__all__ = [
    "ARCHIVE_URL_KEY",
    "CallStore",
    "open_call_store",
    "read_calls",
    "shared_archive_url",
    "stream_never_came",
]

log = logging.getLogger("aybiza.edge.calls")

_FIELDS = frozenset(CallRecord.model_fields) - {"call_id", "status", "version", "owner", "turns"}

ARCHIVE_URL_KEY = "archive_url"
"""Redis key (after the prefix: ``aybiza:archive_url``) holding the archive URL processes on that Redis share."""


def stream_never_came(wait_s: float) -> str:
    """The record's detail for a call whose Media Stream Twilio never opened (the usual cause named)."""
    return (f"Twilio never opened the call's Media Stream within {wait_s:.0f} s of the webhook "
            "(is AYBIZA_PUBLIC_URL this server's address as Twilio reaches it?)")


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
        if not OWNER_PATTERN.fullmatch(self.owner):
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

    async def update(self, call_id: str, *, turn: TurnRecord | Sequence[TurnRecord] | None = None,
                     **changes: Any) -> None:
        """Apply ``changes`` (record fields) and ``turn`` (one or several, added or replaced by id); write the
        snapshot once.

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
        detail: str = "",
    ) -> CallRecord:
        """:meth:`end` with the final fields taken from ``ctx`` and its ledger (starts the record if it never was)."""
        if ctx.call_id not in self._owned:
            await self.start_call(ctx)
        return await self.end(ctx.call_id, outcome=reason,
                              **final_fields(ctx, cost=cost, quality=quality, detail=detail))

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

    async def recover_interrupted(self, *, min_idle_s: float = 0.0, stream_wait_s: float = 120.0) -> list[str]:
        """Archive the live calls of dead processes as ``interrupted``; return their ids.

        Run at startup (``min_idle_s=0``). Run periodically with a grace
        period (e.g. 30 s) so a stream reconnecting to another process can
        :meth:`resume` first. Also flushes the outbox, and archives the calls
        sent here whose stream never started (:meth:`offered`): their process
        died, or ``stream_wait_s`` (the call token's lifetime) passed.
        """
        await self.flush_outbox()
        recovered: list[str] = []
        now = time.time()
        for record in await self.state.live():
            if record.owner == self.owner or record.call_id in self._owned:
                continue
            if now - record.updated_at < min_idle_s or await self.state.owner_alive(record.owner):
                continue
            if await self._interrupt(record):
                recovered.append(record.call_id)
        return recovered + await self._archive_offers(stream_wait_s)

    async def interrupt_owner(self, owner: str) -> list[str]:
        """Archive the live calls of process ``owner`` as ``interrupted`` now; return their ids.

        For a process known to be dead (scale-out: its node stopped
        heartbeating, :mod:`aybiza.edge.nodes`), so neither its lease nor a grace period is waited for.
        Each call is claimed with a fenced take-over first, so two survivors never both archive one.
        """
        recovered: list[str] = []
        for record in await self.state.live():
            if record.owner == owner and record.call_id not in self._owned and await self._interrupt(record):
                recovered.append(record.call_id)
        return recovered

    async def archive_offer(self, offer: Offer, *, outcome: EndReason, detail: str) -> bool:
        """Archive a call whose stream never started from what its webhook knew (``offer``); False if the
        call is live or archived after all.

        For a call sent to a process that died before the stream's start (``interrupted``: no call state
        exists), or whose stream never arrived (``no_connection``).
        """
        if await self.state.read(offer.call_sid) is not None or await self.archive.get(offer.call_sid) is not None:
            return False
        interrupted = outcome is EndReason.INTERRUPTED
        record = CallRecord(call_id=offer.call_sid, status="interrupted" if interrupted else "ended", owner=self.owner,
                            caller=offer.caller, caller_country=locate_number(offer.caller).country,
                            agent_id=offer.agent_id or "default", started_at=offer.offered_at,
                            updated_at=offer.offered_at, ended_at=offer.offered_at, outcome=outcome.value,
                            outcome_detail=detail)
        await self._archive(record)
        log.warning("call %s archived as %s: %s", offer.call_sid, outcome.value, detail)
        return True

    async def offered(self, offer: Offer) -> None:
        """Keep a call ``/twiml`` sent to this process until its stream starts here (:meth:`start`): should
        the process die first, or the stream never come, :meth:`recover_interrupted` still archives it."""
        try:
            await self.state.offer(self.owner, offer)
        except CallStateError as error:  # the call goes on; only a crash before its stream would lose it
            log.warning("call %s: its offer was not kept (%s)", offer.call_sid, error)

    async def _archive_offers(self, stream_wait_s: float) -> list[str]:
        """Archive the kept offers whose stream will not start now: their process died (``interrupted``),
        or their call token expired unused (``no_connection``)."""
        archived: list[str] = []
        now = time.time()
        for owner, offer in await self.state.offers():
            alive = owner == self.owner or await self.state.owner_alive(owner)
            if alive and now - offer.offered_at < stream_wait_s:
                continue
            if alive:
                outcome, detail = EndReason.NO_CONNECTION, stream_never_came(stream_wait_s)
            else:
                outcome, detail = EndReason.INTERRUPTED, "the server stopped before the call's stream started"
            if await self.archive_offer(offer, outcome=outcome, detail=detail):
                archived.append(offer.call_sid)
            await self.state.drop_offer(offer.call_sid)
        return archived

    async def _interrupt(self, record: CallRecord) -> bool:
        """Archive a dead process's live ``record`` as interrupted (True), unless another process claimed it."""
        if record.status != "active":
            # Its process died between writing "ended" and removing it: archive what it wrote.
            await self._archive(record)
            await self.state.remove(record.call_id, record.owner)
            return False
        claimed = await self.state.take_over(record.call_id, self.owner, expect_owner=record.owner)
        if claimed is None:
            return False
        claimed.status, claimed.outcome = "interrupted", "interrupted"
        claimed.ended_at = record.updated_at
        await self._archive(claimed)
        await self.state.remove(claimed.call_id, self.owner)
        log.warning("call %s archived as interrupted (its process %s died)", claimed.call_id, record.owner)
        return True

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
    def _apply(record: CallRecord, turn: TurnRecord | Sequence[TurnRecord] | None,
               changes: Mapping[str, Any]) -> None:
        unknown = set(changes) - _FIELDS
        if unknown:
            raise TypeError(f"not call record fields: {', '.join(sorted(unknown))}")
        for name, value in changes.items():
            setattr(record, name, value)
        if isinstance(turn, TurnRecord):
            record.put_turn(turn)
        elif turn is not None:
            for one in turn:
                record.put_turn(one)
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
    """Write ``record`` to ``directory`` (0700, the file 0600) with fsync of the file and the directory."""
    private_dir(directory)
    name = hashlib.sha256(record.call_id.encode()).hexdigest()[:32]
    final = directory / f"{name}.json"
    temp = directory / f".{name}.tmp"
    with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
        handle.write(record.to_json().encode())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def shared_archive_url(
    client: Redis, data_dir: str | Path, *, prefix: str = "aybiza:", register: bool = True
) -> str:
    """The archive URL registered in Redis for every process sharing it.

    If none is registered yet, ``register`` makes this process's default
    archive (``sqlite:///<absolute data_dir>/calls-archive.db``) the shared
    one with ``SET NX``, so exactly one registration wins; without
    ``register`` (read-only use) the default is returned and nothing is written.
    Raises what the Redis client raises (:data:`~aybiza.edge.redis_util.REDIS_ERRORS`).
    """
    key = prefix + ARCHIVE_URL_KEY
    own = default_archive_url(data_dir)
    if register:
        await client.set(key, own, nx=True)
    registered = await client.get(key)
    if registered is None:  # read-only with nothing registered (or the key was deleted meanwhile)
        return own
    return registered.decode() if isinstance(registered, bytes) else str(registered)


_warned_sqlite_shared: set[str] = set()
"""SQLite archives shared through Redis that this process has warned about (once each)."""


async def _shared_archive(client: Redis, data_dir: Path, *, prefix: str, readonly: bool) -> Archive:
    """The archive every process on this Redis uses (see :func:`shared_archive_url`)."""
    try:
        url = await shared_archive_url(client, data_dir, prefix=prefix, register=not readonly)
    except REDIS_ERRORS as error:
        if not readonly:
            raise CallStateError(
                f"cannot read the shared archive URL from Redis: {type(error).__name__}: {error}") from error
        log.warning("cannot read the shared archive URL from Redis (%s: %s); reading the local archive",
                    type(error).__name__, error)
        return open_archive(None, data_dir)
    try:
        archive = open_archive(url, data_dir)
    except ConfigError as error:
        raise ConfigError(f"archive URL registered in Redis ({prefix}{ARCHIVE_URL_KEY}): {error}") from error
    if archive.kind == "sqlite" and not readonly and url not in _warned_sqlite_shared:
        _warned_sqlite_shared.add(url)
        log.warning("call state is shared through Redis and the call archive is the SQLite file %s: fine for "
                    "processes on this machine; processes on several machines need a shared postgresql:// "
                    "archive (AYBIZA_ARCHIVE_URL)", url.removeprefix("sqlite:///"))
    return archive


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
    """An open store: Redis state if ``redis_url`` else ``<data_dir>/calls-live.db``; the archive at ``archive_url``.

    Without ``archive_url`` the archive is ``<data_dir>/calls-archive.db``,
    or, with ``redis_url``, the one registered in Redis for every process
    sharing it (:func:`shared_archive_url`). ``readonly`` (for the CLI)
    registers no owner and no archive, so it never looks like a live process.
    """
    data = private_dir(Path(data_dir))
    state: StateBackend
    if redis_url:
        client = redis_client(redis_url)
        state = RedisState(client, prefix=redis_prefix, lease_s=lease_s, owns_client=True)
        try:
            archive = (open_archive(archive_url, data) if archive_url
                       else await _shared_archive(client, data, prefix=redis_prefix, readonly=readonly))
        except BaseException:
            await state.aclose()
            raise
    else:
        state = SQLiteState(data / "calls-live.db")
        archive = open_archive(archive_url, data)
    store = CallStore(state, archive, outbox_dir=data / "outbox", owner=owner, readonly=readonly)
    try:
        return await store.open()
    except BaseException:
        await store.aclose()
        raise


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
