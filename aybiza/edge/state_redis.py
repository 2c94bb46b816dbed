"""Live calls on Redis, shared by processes: a hash per call changed only by Lua scripts.

Each call's hash (``aybiza:call:{sid}:state``; the hash tag keeps a call's
keys in one Cluster slot) is changed by scripts that check owner, status and
version and then write, in one atomic step (docs/routing.md §3.3). A sorted
set indexes live calls; an owner key with a short TTL (the lease) says a
process is alive, refreshed by :meth:`RedisState.keepalive` and on writes.
Another process on the same Redis can take a call over and continue its
conversation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
from redis.asyncio import Redis

from .records import CallRecord
from .redis_util import REDIS_ERRORS
from .state import CallFenced, CallStateError, StateBackend, stored_record

__all__ = ["RedisState"]

log = logging.getLogger("aybiza.edge.state_redis")

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
        record = stored_record(result[2], owner=owner, status="active", version=result[1])
        record.updated_at = now
        return record

    async def read(self, call_id: str) -> CallRecord | None:
        """The live record, or None."""
        key = self._state_key(call_id)
        fields = await self._call("read", lambda: self.client.hmget(key, ["owner", "status", "version", "record"]))
        if fields[0] is None or fields[3] is None:
            return None
        return stored_record(fields[3], owner=fields[0], status=fields[1], version=fields[2])

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
                records.append(stored_record(fields[3], owner=fields[0], status=fields[1], version=fields[2]))
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
