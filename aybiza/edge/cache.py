"""A key-value cache with a TTL per entry: in memory (default) or on Redis (shared by processes).

Both backends have the same interface and the same behaviour, which the same
test suite checks: entries live in *namespaces* (``agent``, ``llm``,
``tts``...), each bounded to ``max_entries`` with least-recently-used
eviction, each entry with its own TTL; every namespace counts hits, misses,
sets, evictions and errors.

* :class:`MemoryCache` — an ``OrderedDict`` per namespace, also bounded in
  bytes (TTS audio is large). One process.
* :class:`RedisCache` — ``SET ... PX`` per entry; the LRU order is a sorted
  set per namespace, updated by two small Lua scripts so that a read touches
  and a write evicts atomically, whichever process does it. All keys of one
  namespace share a hash tag (``aybiza:cache:{llm}:...``), so they live in
  one slot. ``max_entries=0`` for a namespace skips the sorted set (plain
  ``GET``/``SET PX``) and leaves eviction to Redis (``maxmemory-policy
  allkeys-lfu`` on a cache-only Redis; the choice for Redis Cluster, where
  scripts should not touch keys they were not given). A Redis error is
  counted and read as a miss: the cache never fails a call.

Agent configurations are read through a cache by
:class:`~aybiza.edge.agent_configs.AgentConfigs` (namespace ``agent``).
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from .redis_util import REDIS_ERRORS, redis_client

__all__ = [
    "Cache",
    "MemoryCache",
    "NamespaceStats",
    "RedisCache",
    "open_cache",
]

log = logging.getLogger("aybiza.edge.cache")


@dataclass(slots=True)
class NamespaceStats:
    """Counters of one namespace (this process's view)."""

    hits: int = 0
    misses: int = 0
    sets: int = 0
    evictions: int = 0
    errors: int = 0

    @property
    def lookups(self) -> int:
        """Hits plus misses."""
        return self.hits + self.misses

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups (0.0 before the first lookup)."""
        return self.hits / self.lookups if self.lookups else 0.0

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly counters and the hit ratio."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "sets": self.sets,
            "evictions": self.evictions,
            "errors": self.errors,
            "hit_ratio": round(self.hit_ratio, 4),
        }


class Cache(ABC):
    """Namespaced bytes cache with a TTL per entry and per-namespace counters."""

    backend: str = "cache"

    def __init__(self, *, max_entries: int | Mapping[str, int] = 10_000, default_ttl_s: float | None = 3600.0) -> None:
        self._max_entries = max_entries
        self.default_ttl_s = default_ttl_s
        self._stats: dict[str, NamespaceStats] = {}

    def max_entries_for(self, namespace: str) -> int:
        """The entry bound of ``namespace`` (0 = unbounded)."""
        if isinstance(self._max_entries, int):
            return self._max_entries
        return self._max_entries.get(namespace, self._max_entries.get("*", 10_000))

    def stats(self, namespace: str) -> NamespaceStats:
        """The counters of ``namespace`` (created on first use)."""
        found = self._stats.get(namespace)
        if found is None:
            found = self._stats[namespace] = NamespaceStats()
        return found

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Counters of every namespace used so far, for metrics and the API."""
        return {name: stats.to_dict() for name, stats in sorted(self._stats.items())}

    async def get(self, namespace: str, key: str) -> bytes | None:
        """The value stored under ``key``, or None (missing or expired); counts a hit or a miss."""
        value = await self._get(namespace, key)
        stats = self.stats(namespace)
        if value is None:
            stats.misses += 1
        else:
            stats.hits += 1
        return value

    async def set(self, namespace: str, key: str, value: bytes, ttl_s: float | None = -1.0) -> None:
        """Store ``value``; ``ttl_s`` seconds to live (default: ``default_ttl_s``; None = no expiry)."""
        ttl = self.default_ttl_s if ttl_s is not None and ttl_s < 0 else ttl_s
        if ttl is not None and ttl <= 0:
            return
        evicted = await self._set(namespace, key, bytes(value), ttl)
        stats = self.stats(namespace)
        stats.sets += 1
        stats.evictions += evicted

    async def get_json(self, namespace: str, key: str) -> Any:
        """Like :meth:`get` for a JSON value (None when missing or unreadable)."""
        raw = await self.get(namespace, key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    async def set_json(self, namespace: str, key: str, value: Any, ttl_s: float | None = -1.0) -> None:
        """Like :meth:`set` for a JSON-serialisable value."""
        await self.set(namespace, key, json.dumps(value, separators=(",", ":")).encode(), ttl_s)

    @abstractmethod
    async def _get(self, namespace: str, key: str) -> bytes | None: ...

    @abstractmethod
    async def _set(self, namespace: str, key: str, value: bytes, ttl_s: float | None) -> int:
        """Store and return how many live entries were evicted to make room."""

    @abstractmethod
    async def delete(self, namespace: str, key: str) -> bool:
        """Remove ``key``; True if it was there."""

    @abstractmethod
    async def clear(self, namespace: str) -> None:
        """Remove every entry of ``namespace`` (counters are kept)."""

    async def aclose(self) -> None:
        """Release connections (nothing for the memory backend)."""
        return None


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires_at: float | None


class MemoryCache(Cache):
    """In-process cache: LRU per namespace bounded by entries and bytes, lazy TTL expiry."""

    backend = "memory"

    def __init__(
        self,
        *,
        max_entries: int | Mapping[str, int] = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        default_ttl_s: float | None = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(max_entries=max_entries, default_ttl_s=default_ttl_s)
        self.max_bytes = max_bytes
        self._clock = clock
        self._spaces: dict[str, OrderedDict[str, _Entry]] = {}
        self._bytes: dict[str, int] = {}

    def _space(self, namespace: str) -> OrderedDict[str, _Entry]:
        space = self._spaces.get(namespace)
        if space is None:
            space = self._spaces[namespace] = OrderedDict()
            self._bytes[namespace] = 0
        return space

    def _drop(self, namespace: str, key: str) -> None:
        entry = self._space(namespace).pop(key, None)
        if entry is not None:
            self._bytes[namespace] -= len(entry.value)

    async def _get(self, namespace: str, key: str) -> bytes | None:
        space = self._space(namespace)
        entry = space.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and self._clock() >= entry.expires_at:
            self._drop(namespace, key)
            return None
        space.move_to_end(key)
        return entry.value

    async def _set(self, namespace: str, key: str, value: bytes, ttl_s: float | None) -> int:
        if len(value) > self.max_bytes:
            return 0  # larger than the whole budget: not cached
        space = self._space(namespace)
        self._drop(namespace, key)
        space[key] = _Entry(value, None if ttl_s is None else self._clock() + ttl_s)
        self._bytes[namespace] += len(value)
        limit = self.max_entries_for(namespace)
        now = self._clock()
        evicted = 0
        while (limit and len(space) > limit) or self._bytes[namespace] > self.max_bytes:
            oldest, entry = next(iter(space.items()))
            self._drop(namespace, oldest)
            if entry.expires_at is None or entry.expires_at > now:
                evicted += 1  # an expired entry leaving is not an eviction
        return evicted

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove ``key``; True if it was there (and not expired)."""
        present = await self._get(namespace, key) is not None
        self._drop(namespace, key)
        return present

    async def clear(self, namespace: str) -> None:
        """Remove every entry of ``namespace``."""
        self._spaces.pop(namespace, None)
        self._bytes.pop(namespace, None)

    def __len__(self) -> int:
        return sum(len(space) for space in self._spaces.values())


# KEYS: value key, LRU sorted set, LRU clock. ARGV: member.
_GET_TOUCH = """
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
  return v
end
redis.call('ZREM', KEYS[2], ARGV[1])
return false
"""

# KEYS: value key, LRU sorted set, LRU clock. ARGV: value, ttl ms (0 = none), max entries (0 = none),
# member, value-key prefix. Returns the number of live entries evicted.
_SET_EVICT = """
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[4])
local evicted = 0
local limit = tonumber(ARGV[3])
if limit > 0 then
  local excess = redis.call('ZCARD', KEYS[2]) - limit
  if excess > 0 then
    local old = redis.call('ZPOPMIN', KEYS[2], excess)
    for i = 1, #old, 2 do
      evicted = evicted + redis.call('DEL', ARGV[5] .. old[i])
    end
  end
end
return evicted
"""


class RedisCache(Cache):
    """Cache on a shared Redis: TTL per entry (``PX``), LRU bound per namespace via Lua."""

    backend = "redis"

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "aybiza:cache:",
        max_entries: int | Mapping[str, int] = 10_000,
        default_ttl_s: float | None = 3600.0,
        owns_client: bool = False,
    ) -> None:
        super().__init__(max_entries=max_entries, default_ttl_s=default_ttl_s)
        self.client = client
        self.prefix = prefix
        self._owns_client = owns_client
        self._get_script = client.register_script(_GET_TOUCH)
        self._set_script = client.register_script(_SET_EVICT)

    def _keys(self, namespace: str, key: str) -> tuple[str, str, str, str]:
        base = f"{self.prefix}{{{namespace}}}:"
        return base + "v:" + key, base + "lru", base + "clock", base + "v:"

    def _failed(self, namespace: str, what: str, error: BaseException) -> None:
        self.stats(namespace).errors += 1
        log.warning("redis cache %s failed (%s: %s); treated as a miss", what, type(error).__name__, error)

    async def _get(self, namespace: str, key: str) -> bytes | None:
        value_key, lru, clock, _ = self._keys(namespace, key)
        value: Any
        try:
            if not self.max_entries_for(namespace):  # unbounded: Redis's maxmemory policy evicts
                value = await self.client.get(value_key)
            else:
                value = await self._get_script(keys=[value_key, lru, clock], args=[key])
        except REDIS_ERRORS as error:
            self._failed(namespace, "get", error)
            return None
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def _set(self, namespace: str, key: str, value: bytes, ttl_s: float | None) -> int:
        value_key, lru, clock, value_prefix = self._keys(namespace, key)
        ttl_ms = 0 if ttl_s is None else max(1, int(ttl_s * 1000))
        try:
            if not self.max_entries_for(namespace):
                await self.client.set(value_key, value, px=ttl_ms or None)
                return 0
            evicted = await self._set_script(
                keys=[value_key, lru, clock],
                args=[value, ttl_ms, self.max_entries_for(namespace), key, value_prefix],
            )
        except REDIS_ERRORS as error:
            self._failed(namespace, "set", error)
            return 0
        return int(evicted)

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        value_key, lru, _, _ = self._keys(namespace, key)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(value_key)
                pipe.zrem(lru, key)
                removed, _ = await pipe.execute()
        except REDIS_ERRORS as error:
            self._failed(namespace, "delete", error)
            return False
        return bool(removed)

    async def clear(self, namespace: str) -> None:
        """Remove every entry of ``namespace`` (SCAN + UNLINK; not atomic with concurrent writers)."""
        pattern = f"{self.prefix}{{{namespace}}}:*"
        batch: list[bytes] = []
        async for key in self.client.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                await self.client.unlink(*batch)
                batch = []
        if batch:
            await self.client.unlink(*batch)

    async def aclose(self) -> None:
        """Close the client if this cache created it."""
        if self._owns_client:
            await self.client.aclose()


def open_cache(
    redis_url: str | None = None,
    *,
    max_entries: int | Mapping[str, int] = 10_000,
    max_bytes: int = 64 * 1024 * 1024,
    default_ttl_s: float | None = 3600.0,
    prefix: str = "aybiza:cache:",
) -> Cache:
    """A :class:`RedisCache` on ``redis_url`` (shared by processes) or a :class:`MemoryCache`."""
    if redis_url:
        return RedisCache(redis_client(redis_url), prefix=prefix, max_entries=max_entries,
                          default_ttl_s=default_ttl_s, owns_client=True)
    return MemoryCache(max_entries=max_entries, max_bytes=max_bytes, default_ttl_s=default_ttl_s)
