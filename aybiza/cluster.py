"""This node's part in a cluster of nodes sharing ``AYBIZA_REDIS_URL``: register, place calls, reap the dead.

Started by :meth:`aybiza.runtime.Runtime.run` when Redis is configured.
Every ``AYBIZA_NODE_HEARTBEAT_S`` it

* registers the node (:class:`~aybiza.edge.nodes.NodeRegistry`): its public
  URL, capacity (``AYBIZA_MAX_CALLS``), live calls and whether it drains;
* looks for nodes that stopped heartbeating without leaving and whose
  call-state lease (:class:`~aybiza.edge.state_redis.RedisState`, 10 s) ran
  out too, and — when it wins the reaper lock for one — archives that node's
  live calls as ``interrupted`` (:meth:`~aybiza.edge.calls.CallStore.interrupt_owner`), and the calls
  offered to it whose stream had not started yet (:meth:`~aybiza.edge.nodes.NodeRegistry.pending`,
  :meth:`~aybiza.edge.calls.CallStore.archive_offer`);
* every ten heartbeats archives as ``no_connection`` the calls sent to this
  node whose stream never came while their call token lived.
  A node drops out of call placement within ``AYBIZA_NODE_MISSED_HEARTBEATS``
  heartbeats; its calls are archived once its lease has expired as well,
  so a node that is only slow (a starved event loop) never loses its calls.

``/twiml`` asks :meth:`Cluster.stream_url` where the call should go: the
stream URL of the node with the most free capacity, so any node can answer
the webhook and a plain load balancer in front of ``/twiml`` is enough.
Call tokens become :class:`~aybiza.transports.signed_tokens.SignedCallTokens`
so the node the stream reaches can check a token another node minted.

Redis trouble never stops calls: the node then offers itself (unless it
drains) and serves what reaches it; registration resumes with Redis.
"""

from __future__ import annotations

import logging
import socket

import anyio

from .edge.calls import stream_never_came
from .edge.nodes import Node, NodeRegistry
from .edge.redis_util import REDIS_ERRORS, redis_client
from .errors import AybizaError, EndReason
from .logs import Throttled
from .runtime import Runtime
from .transports.signed_tokens import SignedCallTokens, shared_key

__all__ = ["Cluster"]

log = logging.getLogger("aybiza.cluster")
_trouble = Throttled(log)
_PREFIX = "aybiza:"
_SWEEP_EVERY = 10
"""Heartbeats between two looks for this node's calls whose stream never came."""


class Cluster:
    """Registration, call placement and the reaping of dead nodes, for one runtime on one Redis."""

    def __init__(self, runtime: Runtime, registry: NodeRegistry) -> None:
        self.runtime = runtime
        self.registry = registry
        self.draining = False
        self.host = socket.gethostname()
        self.seen_nodes = 0  # live nodes in Redis at the last heartbeat (this one included)

    @classmethod
    async def open(cls, runtime: Runtime) -> Cluster:
        """Join the cluster: the shared token key, then the first registration. Needs the open call store
        (the node's id is the store's owner id, so survivors find its calls by it)."""
        settings, store = runtime.settings, runtime.store
        assert store is not None, "open the call store first"
        client = redis_client(settings.redis_url)
        try:
            key = await shared_key(client, _PREFIX)
        except REDIS_ERRORS as error:
            await client.aclose()
            raise AybizaError(f"cannot join the cluster on Redis: {type(error).__name__}: {error}") from error

        async def claim_once(nonce: str, ttl_s: float) -> bool:
            try:
                return bool(await client.set(f"{_PREFIX}token:{nonce}", b"1", nx=True, px=int(ttl_s * 1000)))
            except REDIS_ERRORS as error:  # the signature and binding still hold; a call is not refused for this
                _trouble.warning("claim", "cannot record a call token's use in Redis (%s); accepted",
                                 type(error).__name__)
                return True

        runtime.tokens = SignedCallTokens(key, claim_once, settings.call_token_ttl_s,
                                          max_pending=settings.max_call_tokens)
        registry = NodeRegistry(client, store.owner, prefix=_PREFIX, heartbeat_s=settings.node_heartbeat_s,
                                missed=settings.node_missed_heartbeats)
        cluster = cls(runtime, registry)
        await cluster.heartbeat()
        log.info("joined the cluster as node %s (%s, capacity %d)", store.owner, settings.base_url,
                 runtime.admission.total)
        return cluster

    def describe(self) -> Node:
        """This node as the others should see it now."""
        runtime = self.runtime
        return Node(node_id=self.registry.node_id, public_url=runtime.settings.base_url,
                    capacity=runtime.admission.total, live=runtime.admission.active, draining=self.draining,
                    host=self.host)

    async def heartbeat(self) -> None:
        """Register once, and count the live nodes (raises what Redis raises)."""
        await self.registry.register(self.describe(), list(self.runtime.calls))
        self.seen_nodes = len(await self.registry.nodes())

    async def run(self) -> None:
        """Heartbeat and reap until cancelled; now and then archive this node's calls whose stream never came."""
        beats = 0
        while True:
            try:
                await self.heartbeat()
                await self.reap()
                beats += 1
                if beats % _SWEEP_EVERY == 0:
                    await self.archive_unconnected()
            except REDIS_ERRORS as error:
                _trouble.warning("heartbeat", "cluster heartbeat failed (%s: %s); serving on", type(error).__name__,
                                 error)
            except AybizaError as error:
                _trouble.warning("reap", "archiving a gone node's calls failed, will retry: %s", error)
            await anyio.sleep(self.registry.heartbeat_s)

    async def reap(self) -> list[str]:
        """Archive the calls of nodes that died (when this node wins each one's lock); the calls' ids."""
        store = self.runtime.store
        archived: list[str] = []
        if store is None or self.draining:
            return archived
        for node_id in await self.registry.gone():
            # A node whose heartbeat is merely late (a starved event loop) still holds its call-state lease:
            # its calls are not taken from under it; a dead node's lease runs out within its length.
            if await store.state.owner_alive(node_id) or not await self.registry.claim_reaping(node_id):
                continue
            calls = await store.interrupt_owner(node_id)
            detail = f"its node {node_id} died before the call's stream started"
            unconnected = [offer.call_sid for offer in await self.registry.pending(node_id)
                           if await store.archive_offer(offer, outcome=EndReason.INTERRUPTED, detail=detail)]
            await self.registry.forget(node_id)
            log.warning("node %s is gone: archived its %d live call(s) and %d call(s) it was sent but had not "
                        "started as interrupted", node_id, len(calls), len(unconnected))
            calls += unconnected
            self.runtime.metrics.reaped(len(calls))
            await self.runtime.interrupted_calls_ended(calls)
            archived += calls
        return archived

    async def archive_unconnected(self) -> list[str]:
        """Archive (``no_connection``) the calls sent to this node whose stream never came while their call
        token lived (raises what Redis raises); their ids."""
        store, wait_s = self.runtime.store, self.runtime.settings.call_token_ttl_s
        if store is None:
            return []
        detail = stream_never_came(wait_s)
        offers = await self.registry.unconnected(wait_s)
        archived = [offer.call_sid for offer in offers
                    if await store.archive_offer(offer, outcome=EndReason.NO_CONNECTION, detail=detail)]
        await self.registry.settle([offer.call_sid for offer in offers])
        await self.runtime.interrupted_calls_ended(archived)
        return archived

    async def stream_url(self, call_sid: str, *, caller: str = "", agent_id: str = "") -> str | None:
        """Where ``call_sid``'s Media Stream should connect: the freest node's stream URL (None: every node
        is full or draining). ``caller`` and ``agent_id`` are kept with the offer, for its record should that
        node die before the stream starts."""
        try:
            node = await self.registry.pick(call_sid, caller=caller, agent_id=agent_id)
        except REDIS_ERRORS as error:
            _trouble.warning("pick", "cannot place a call through Redis (%s); this node takes it",
                             type(error).__name__)
            node = None
        if node is None and not self.draining and self.runtime.admission.has_room("twilio"):
            node = self.describe()  # this node is evidently up, even if its registration lapsed
        return None if node is None else node.stream_url

    async def drain(self) -> None:
        """Offer this node to no new call, at once (the next heartbeat would say so too, a second later)."""
        self.draining = True
        try:
            await self.heartbeat()
        except REDIS_ERRORS as error:
            log.warning("could not announce draining in Redis (%s); the next heartbeat will", type(error).__name__)

    async def aclose(self) -> None:
        """Leave the cluster (a clean exit) and close the connection."""
        try:
            await self.registry.leave()
        except REDIS_ERRORS as error:
            log.warning("could not leave the cluster cleanly (%s); the node expires in a few seconds",
                        type(error).__name__)
        await self.registry.client.aclose()
