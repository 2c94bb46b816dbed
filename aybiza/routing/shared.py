"""Health views shared between processes through Redis.

Each process measures its own health (probes and real requests) and, every
``interval_s``, publishes that local snapshot as JSON under
``aybiza:health:<node_id>`` with a TTL of three intervals, then reads the
other nodes' keys. :meth:`SharedHealth.merged` folds their views into the local
snapshot with :func:`~aybiza.routing.health.merge_shared`: a region another node
sees as unhealthy is demoted to degraded here, never excluded.

Routing never waits on Redis: :meth:`~SharedHealth.merged` reads views already
in memory. When Redis fails, the error is logged once at warning, the last
views are kept, and each is dropped when its key would have expired (its TTL
as read), so a view is never trusted longer than a live key would be.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from aybiza.edge.redis_util import REDIS_ERRORS
from aybiza.routing.health import Clock, HealthSnapshot, RegionHealth, merge_shared

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["KEY_PREFIX", "SharedHealth"]

KEY_PREFIX = "aybiza:health:"
"""Redis key prefix of the published snapshots; the node id follows it."""

_log = logging.getLogger("aybiza.routing.shared")


@dataclass(frozen=True, slots=True)
class _NodeViews:
    """Another node's region views and when (local clock) they stop counting."""

    views: tuple[RegionHealth, ...]
    expires_at: float


class SharedHealth:
    """Publishes this process's health to Redis and keeps the other processes' views."""

    def __init__(
        self,
        redis: Redis,
        node_id: str,
        *,
        interval_s: float = 2.0,
        ttl_intervals: float = 3.0,
        clock: Clock = time.monotonic,
        prefix: str = KEY_PREFIX,
    ) -> None:
        if not node_id:
            raise ValueError("SharedHealth needs a non-empty node id")
        if interval_s <= 0 or ttl_intervals < 1:
            raise ValueError("interval_s must be > 0 and ttl_intervals >= 1")
        self.redis = redis
        self.node_id = node_id
        self.interval_s = interval_s
        self.ttl_s = interval_s * ttl_intervals
        self.prefix = prefix
        self.key = prefix + node_id
        self._clock = clock
        self._nodes: dict[str, _NodeViews] = {}
        self._failing = False

    # -- what routing reads (no I/O) --------------------------------------------------------

    @property
    def nodes(self) -> tuple[str, ...]:
        """Ids of the other nodes whose views count now."""
        self._forget_expired()
        return tuple(sorted(self._nodes))

    def views(self) -> list[RegionHealth]:
        """Every region view of the other nodes that has not expired."""
        self._forget_expired()
        return [view for node in sorted(self._nodes) for view in self._nodes[node].views]

    def merged(self, local: HealthSnapshot) -> HealthSnapshot:
        """``local`` with the other nodes' views folded in (see :func:`merge_shared`)."""
        return merge_shared(local, self.views())

    # -- Redis I/O ---------------------------------------------------------------------------

    async def run(self, local: Callable[[], HealthSnapshot]) -> None:
        """Publish ``local()`` and read the others every interval, until cancelled; then withdraw."""
        try:
            while True:
                await self.sync(local())
                await anyio.sleep(self.interval_s)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.interval_s):
                await self.withdraw()

    async def sync(self, snapshot: HealthSnapshot) -> bool:
        """Publish ``snapshot`` and read the other nodes once; False if Redis failed (views kept)."""
        try:
            await self.publish(snapshot)
            await self.refresh()
        except REDIS_ERRORS as error:
            if not self._failing:
                _log.warning("shared health: Redis failed (%s: %s); routing on local health and views "
                             "younger than %.1f s", type(error).__name__, error, self.ttl_s)
            self._failing = True
            self._forget_expired()
            return False
        if self._failing:
            _log.info("shared health: Redis is back; %d other node(s) sharing", len(self._nodes))
        self._failing = False
        return True

    async def publish(self, snapshot: HealthSnapshot) -> None:
        """Write this node's snapshot with a TTL of ``ttl_s`` (raises Redis errors)."""
        payload = json.dumps(snapshot.to_dict(), separators=(",", ":"))
        await self.redis.set(self.key, payload, px=max(1, round(self.ttl_s * 1000)))

    async def refresh(self) -> None:
        """Read every other node's snapshot, replacing the views held (raises Redis errors)."""
        keys = [_text(key) async for key in self.redis.scan_iter(match=self.prefix + "*", count=100)]
        others = sorted(key for key in keys if key != self.key)
        replies: list[object] = []
        if others:
            pipe = self.redis.pipeline(transaction=False)
            for key in others:
                pipe.get(key)
                pipe.pttl(key)
            replies = await pipe.execute()
        now = self._clock()
        nodes: dict[str, _NodeViews] = {}
        for index, key in enumerate(others):
            raw, pttl = replies[2 * index], replies[2 * index + 1]
            if raw is None:  # expired between SCAN and GET
                continue
            node = key[len(self.prefix):]
            try:
                snapshot = HealthSnapshot.from_dict(json.loads(_text(raw)))
            except (ValueError, KeyError, TypeError) as error:
                _log.warning("shared health: ignoring node %s: unreadable snapshot (%s)", node, error)
                continue
            # A key without a TTL (-1) counts for one TTL from now, like a fresh one.
            remaining = self.ttl_s if not isinstance(pttl, int) or pttl < 0 else min(pttl / 1000, self.ttl_s)
            nodes[node] = _NodeViews(tuple(snapshot.regions.values()), now + remaining)
        self._nodes = nodes

    async def withdraw(self) -> None:
        """Delete this node's key (at shutdown), so others stop counting its views at once."""
        try:
            await self.redis.delete(self.key)
        except REDIS_ERRORS as error:
            _log.warning("shared health: could not withdraw %s (%s); it expires in %.1f s", self.key, error,
                         self.ttl_s)

    def _forget_expired(self) -> None:
        now = self._clock()
        for node in [node for node, held in self._nodes.items() if held.expires_at <= now]:
            del self._nodes[node]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
