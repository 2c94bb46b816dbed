"""Where live call records are kept between updates: the backend interface and its errors.

A *state backend* holds a snapshot of every active call's
:class:`~aybiza.edge.records.CallRecord`. Each write is one atomic, fenced
step: it lands only if the writer still owns the call, the call is still
active and the version is newer, so a retried write is a no-op and a stale
owner is refused with :class:`CallFenced`. Backends also say whether an
owner (a process) is still alive, so the calls of dead processes can be
recovered.

Implementations: :class:`~aybiza.edge.state_sqlite.SQLiteState` (one
machine, the default) and :class:`~aybiza.edge.state_redis.RedisState`
(several processes on one Redis; docs/routing.md §3.3).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any

import anyio

from ..errors import CallError
from .records import CallRecord, Offer

__all__ = ["OWNER_PATTERN", "CallFenced", "CallStateError", "StateBackend", "stored_record"]

OWNER_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""Owner (process) ids are plain names: they become file names and Redis keys."""


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

    async def offer(self, owner: str, offer: Offer) -> None:
        """Keep ``offer`` (a call ``/twiml`` sent to ``owner``) until the call's record is created.

        The base keeps nothing: with Redis the cluster keeps each node's offers
        (:mod:`aybiza.edge.nodes`); SQLite keeps them beside the live calls.
        """
        return None

    async def offers(self) -> list[tuple[str, Offer]]:
        """Every kept offer whose call was not created, with the owner it was sent to (oldest first)."""
        return []

    async def drop_offer(self, call_id: str) -> None:
        """Forget ``call_id``'s offer (its call was archived without its stream)."""
        return None

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


def stored_record(data: str | bytes, *, owner: Any, status: Any, version: Any) -> CallRecord:
    """A stored record with the backend's authoritative owner, status and version applied."""
    record = CallRecord.from_json(data)
    record.owner = owner.decode() if isinstance(owner, bytes) else str(owner)
    record.status = (status.decode() if isinstance(status, bytes) else str(status))  # type: ignore[assignment]
    record.version = int(version)
    return record
