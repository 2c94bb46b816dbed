"""The nodes sharing one Redis: who is up, how full, who drains; and which node takes the next call.

Each node (one ``aybiza serve`` process) writes its :class:`Node` (public
URL, capacity, live calls, draining) to ``aybiza:node:{id}`` with a TTL of a
few heartbeats and keeps its id in the set ``aybiza:nodes``. A node that stops
heartbeating (killed, frozen, cut off) loses its key within
``missed`` heartbeats; the set still names it, which is how the survivors
notice it is gone (:meth:`NodeRegistry.gone`) and archive its calls
(exactly one survivor: :meth:`NodeRegistry.claim_reaping` is a ``SET NX`` lock).

:meth:`NodeRegistry.pick` chooses the node with the most free capacity for a
new call in one Lua script, and records the offer there
(``aybiza:node:{id}:offered``, a sorted set of CallSids by expiry): a burst of
webhooks arriving between two heartbeats would otherwise all see the same
stale counts and go to the same node. An offer counts against its node until
the call shows up in that node's live count (its next heartbeat removes the
offer in the same transaction) or until it expires. Ties go to a random node
among the best, so equal nodes share a burst evenly.

Each offer also keeps what the webhook knew of the call (:class:`Offer`: caller,
agent, when) in ``aybiza:node:{id}:pending`` until the call goes live there. A
node killed between the webhook and its stream's start leaves no call state;
the survivor that reaps it archives those calls from their offers
(:meth:`NodeRegistry.pending`); a live node archives its own offers whose
stream never came once their call token has expired
(:meth:`NodeRegistry.unconnected`), so no call Twilio was told about goes unrecorded.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

from ..transports.urls import media_stream_url
from .records import Offer

__all__ = ["Node", "NodeRegistry", "Offer"]

log = logging.getLogger("aybiza.edge.nodes")

OFFER_TTL_S = 15.0
"""An offered call counts against its node this long if its stream never arrives (Twilio connects in < 1 s)."""
PENDING_TTL_S = 600.0
"""A node's pending calls outlive a quiet spell this long after the last offer: past any call token's lifetime,
so the node itself (:meth:`NodeRegistry.unconnected`) or its reaper sees each one first."""
REAPER_LOCK_S = 60.0
"""How long one survivor holds the right to archive a gone node's calls (it retries after, if it failed)."""

# KEYS: n node keys, then their n offer sets, then their n pending-call hashes. ARGV: now, offer expiry, call sid,
# first index to look at (1..n), the offer set's TTL in ms, the offer's details (JSON), the pending hash's TTL in ms.
# Returns the chosen node's JSON (the offer recorded), or false when every node is full or draining.
_PICK = """
local n = #KEYS / 3
local best, best_free = nil, 0
for step = 0, n - 1 do
  local i = (tonumber(ARGV[4]) - 1 + step) % n + 1
  local info = redis.call('GET', KEYS[i])
  if info then
    redis.call('ZREMRANGEBYSCORE', KEYS[n + i], '-inf', ARGV[1])
    local node = cjson.decode(info)
    if not node.draining then
      local free = node.capacity - node.live - redis.call('ZCARD', KEYS[n + i])
      if free > best_free then best, best_free = i, free end
    end
  end
end
if not best then return false end
redis.call('ZADD', KEYS[n + best], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[n + best], math.floor(tonumber(ARGV[5])))
redis.call('HSET', KEYS[2 * n + best], ARGV[3], ARGV[6])
redis.call('PEXPIRE', KEYS[2 * n + best], math.floor(tonumber(ARGV[7])))
return redis.call('GET', KEYS[best])
"""


@dataclass(frozen=True, slots=True)
class Node:
    """One node as it last registered."""

    node_id: str
    public_url: str
    capacity: int
    live: int
    draining: bool
    host: str = ""

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.live)

    @property
    def stream_url(self) -> str:
        """The node's Media Stream URL (``wss://`` for an https public URL, ``ws://`` for http)."""
        return media_stream_url(self.public_url)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> Node:
        fields: dict[str, Any] = json.loads(data)
        return cls(**{name: fields[name] for name in cls.__dataclass_fields__ if name in fields})


class NodeRegistry:
    """This node's registration in Redis, the view of every node, and the placement of new calls.

    Every method raises what the Redis client raises; the caller (:mod:`aybiza.cluster`) decides what a
    Redis outage means (the node then serves its own calls only).
    """

    def __init__(self, client: Redis, node_id: str, *, prefix: str = "aybiza:", heartbeat_s: float = 1.0,
                 missed: int = 3) -> None:
        self.client = client
        self.node_id = node_id
        self.prefix = prefix
        self.heartbeat_s = heartbeat_s
        self.ttl_ms = int(heartbeat_s * missed * 1000)
        self._pick = client.register_script(_PICK)

    @property
    def _members(self) -> str:
        return f"{self.prefix}nodes"

    def _key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def _offers(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}:offered"

    def _pending(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}:pending"

    async def register(self, node: Node, live_calls: list[str]) -> None:
        """Write ``node`` with its TTL; the calls now live here stop counting as offers and stop being
        pending (one transaction)."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self._key(node.node_id), node.to_json(), px=self.ttl_ms)
            pipe.sadd(self._members, node.node_id)
            if live_calls:
                pipe.zrem(self._offers(node.node_id), *live_calls)
                pipe.hdel(self._pending(node.node_id), *live_calls)
            await pipe.execute()

    async def leave(self) -> None:
        """Take this node out at once (a clean exit; its calls were ended or handed over)."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(self.node_id), self._offers(self.node_id), self._pending(self.node_id))
            pipe.srem(self._members, self.node_id)
            await pipe.execute()

    async def _ids(self) -> list[str]:
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in await self.client.smembers(self._members))

    async def nodes(self) -> list[Node]:
        """Every registered node that is still heartbeating."""
        ids = await self._ids()
        if not ids:
            return []
        values = await self.client.mget([self._key(i) for i in ids])
        return [Node.from_json(v) for v in values if v is not None]

    async def gone(self) -> list[str]:
        """Nodes still in the member set whose registration expired: they died without leaving."""
        ids = await self._ids()
        if not ids:
            return []
        values = await self.client.mget([self._key(i) for i in ids])
        return [node_id for node_id, value in zip(ids, values, strict=True)
                if value is None and node_id != self.node_id]

    async def claim_reaping(self, node_id: str) -> bool:
        """Whether this node won the right to archive ``node_id``'s calls (one survivor does)."""
        key = f"{self.prefix}node:{node_id}:reaper"
        return bool(await self.client.set(key, self.node_id, nx=True, px=int(REAPER_LOCK_S * 1000)))

    async def pending(self, node_id: str) -> list[Offer]:
        """The calls offered to ``node_id`` that were not live there at its last heartbeat (oldest first)."""
        values = await self.client.hvals(self._pending(node_id))
        offers: list[Offer] = []
        for value in values:
            try:
                offers.append(Offer.from_json(value))
            except (ValueError, KeyError, TypeError) as error:
                log.warning("ignored an unreadable pending call of node %s: %s", node_id, error)
        return sorted(offers, key=lambda offer: offer.offered_at)

    async def unconnected(self, older_than_s: float) -> list[Offer]:
        """This node's pending calls offered more than ``older_than_s`` ago: their stream never came."""
        cutoff = time.time() - older_than_s
        return [offer for offer in await self.pending(self.node_id) if offer.offered_at < cutoff]

    async def settle(self, call_sids: list[str]) -> None:
        """These pending calls of this node are archived: forget them."""
        if call_sids:
            await self.client.hdel(self._pending(self.node_id), *call_sids)

    async def forget(self, node_id: str) -> None:
        """Drop a gone node from the member set once its calls are archived."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.srem(self._members, node_id)
            pipe.delete(self._offers(node_id), self._pending(node_id))
            await pipe.execute()

    async def pick(self, call_sid: str, *, caller: str = "", agent_id: str = "") -> Node | None:
        """The node with the most free capacity (random among equals) for ``call_sid``, the offer recorded
        (with ``caller`` and ``agent_id``, see :meth:`pending`); None when every node is full or draining."""
        ids = await self._ids()
        if not ids:
            return None
        now = time.time()
        keys = [self._key(i) for i in ids] + [self._offers(i) for i in ids] + [self._pending(i) for i in ids]
        offer = Offer(call_sid=call_sid, caller=caller, agent_id=agent_id, offered_at=now)
        chosen = await self._pick(keys=keys, args=[repr(now), repr(now + OFFER_TTL_S), call_sid,
                                                   random.randint(1, len(ids)), OFFER_TTL_S * 2000,
                                                   offer.to_json(), PENDING_TTL_S * 1000])
        return Node.from_json(chosen) if chosen else None
