"""The node registry on a real Redis: registration with a TTL, placement by free capacity, the dead noticed."""

from __future__ import annotations

import collections
import time

import anyio
import pytest

from aybiza.edge import nodes
from aybiza.edge.nodes import Node, NodeRegistry
from aybiza.edge.redis_util import redis_client

pytestmark = pytest.mark.anyio


def node(node_id: str, capacity: int = 10, live: int = 0, *, draining: bool = False) -> Node:
    return Node(node_id, f"https://{node_id}.example.com", capacity, live, draining)


async def test_a_call_goes_to_the_node_with_the_most_free_capacity(redis_url: str) -> None:
    client = redis_client(redis_url)
    registry = NodeRegistry(client, "a")
    try:
        await registry.register(node("a", capacity=10, live=8), [])
        await registry.register(node("b", capacity=10, live=3), [])
        await registry.register(node("c", capacity=50, live=50), [])  # full
        picked = await registry.pick("CA1")
        assert picked is not None and picked.node_id == "b"
        assert picked.stream_url == "wss://b.example.com/twilio/stream"
    finally:
        await client.aclose()


async def test_offers_count_until_the_call_shows_up_in_the_live_count(redis_url: str) -> None:
    """A burst between heartbeats is spread by the recorded offers, not sent to one stale 'freest' node."""
    client = redis_client(redis_url)
    registry = NodeRegistry(client, "a")
    try:
        for name in "abc":
            await registry.register(node(name, capacity=100), [])
        picks = [await registry.pick(f"CA{n}") for n in range(90)]
        counts = collections.Counter(p.node_id for p in picks if p is not None)
        assert counts == {"a": 30, "b": 30, "c": 30}
        # b's heartbeat reports 30 live calls: those offers are settled, not counted twice.
        mine = [f"CA{n}" for n, p in enumerate(picks) if p is not None and p.node_id == "b"]
        await registry.register(node("b", capacity=100, live=30), mine)
        assert await client.zcard("aybiza:node:b:offered") == 0
        picked = await registry.pick("CA-next")
        assert picked is not None and picked.node_id in {"a", "b", "c"}
    finally:
        await client.aclose()


async def test_draining_and_full_nodes_get_no_calls(redis_url: str) -> None:
    client = redis_client(redis_url)
    registry = NodeRegistry(client, "a")
    try:
        await registry.register(node("a", draining=True), [])
        await registry.register(node("b", capacity=1, live=1), [])
        assert await registry.pick("CA1") is None
        await registry.register(node("b", capacity=2, live=1), [])
        assert (await registry.pick("CA2")).node_id == "b"  # type: ignore[union-attr]
        assert await registry.pick("CA3") is None  # b's one free slot is offered already
    finally:
        await client.aclose()


async def test_a_node_that_stops_heartbeating_is_gone_within_a_few_heartbeats(redis_url: str) -> None:
    client = redis_client(redis_url)
    survivor = NodeRegistry(client, "a", heartbeat_s=0.1, missed=3)
    dead = NodeRegistry(client, "b", heartbeat_s=0.1, missed=3)
    try:
        await survivor.register(node("a"), [])
        await dead.register(node("b"), [])
        assert await survivor.gone() == []
        with anyio.fail_after(2):
            while not await survivor.gone():
                await survivor.register(node("a"), [])  # a keeps beating; b does not
                await anyio.sleep(0.1)
        assert await survivor.gone() == ["b"]
        assert [n.node_id for n in await survivor.nodes()] == ["a"]
        assert (await survivor.pick("CA1")).node_id == "a"  # type: ignore[union-attr]
        # One survivor wins the right to archive b's calls.
        other = NodeRegistry(client, "c")
        assert await survivor.claim_reaping("b") and not await other.claim_reaping("b")
        await survivor.forget("b")
        assert await survivor.gone() == []
    finally:
        await client.aclose()


async def test_a_node_that_leaves_is_out_at_once(redis_url: str) -> None:
    client = redis_client(redis_url)
    registry = NodeRegistry(client, "a")
    try:
        await registry.register(node("a"), [])
        await registry.leave()
        assert await registry.nodes() == [] and await registry.gone() == []
        assert await registry.pick("CA1") is None
    finally:
        await client.aclose()


async def test_an_offer_stays_pending_with_what_the_webhook_knew_until_its_call_is_live(
    redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a survivor needs to record a call whose node died before the stream started (cluster.py reaps it)."""
    client = redis_client(redis_url)
    registry = NodeRegistry(client, "a")
    try:
        await registry.register(node("b"), [])
        assert await registry.pending("b") == []
        for n in range(3):
            picked = await registry.pick(f"CA{n}", caller=f"+3491555000{n}", agent_id="default")
            assert picked is not None and picked.node_id == "b"
        offers = await registry.pending("b")
        assert [(o.call_sid, o.caller, o.agent_id) for o in offers] == [
            (f"CA{n}", f"+3491555000{n}", "default") for n in range(3)]
        # b's heartbeat reports CA1 live: it is no longer pending there.
        await registry.register(node("b", live=1), ["CA1"])
        assert [o.call_sid for o in await registry.pending("b")] == ["CA0", "CA2"]
        # An offer whose stream never came stops counting against b, but stays pending until b archives it
        # (its call token expired: Cluster.archive_unconnected) and settles it.
        later = time.time() + nodes.OFFER_TTL_S + 1
        monkeypatch.setattr(time, "time", lambda: later)
        assert (await registry.pick("CA3")) is not None
        assert [o.call_sid for o in await registry.pending("b")] == ["CA0", "CA2", "CA3"]
        assert await client.zrange("aybiza:node:b:offered", 0, -1) == [b"CA3"]
        b = NodeRegistry(client, "b")
        stale = await b.unconnected(nodes.OFFER_TTL_S)
        assert [o.call_sid for o in stale] == ["CA0", "CA2"]
        await b.settle([o.call_sid for o in stale])
        assert [o.call_sid for o in await registry.pending("b")] == ["CA3"]
        assert 0 < await client.pttl("aybiza:node:b:pending") <= nodes.PENDING_TTL_S * 1000
        await registry.forget("b")
        assert await registry.pending("b") == []
    finally:
        await client.aclose()
