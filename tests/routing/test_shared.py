"""Shared health across processes, on a real redis-server: publish, merge, expire, survive Redis failures."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from redis.asyncio import Redis

from aybiza.edge.redis_util import redis_client
from aybiza.routing.health import BreakerState, HealthSnapshot, HealthState, RegionHealth
from aybiza.routing.service import RoutingService
from aybiza.routing.shared import KEY_PREFIX, SharedHealth
from aybiza.testing.redis_server import RedisServer, redis_server_binary

UK = "+447700900123"


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with RedisServer() as server:
        yield server


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = redis_client(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


def unhealthy(service: RoutingService, region: str) -> None:
    for _ in range(service.health.config.unhealthy_after):
        service.health.record_probe(region, False)


@pytest.mark.anyio
async def test_a_region_one_node_sees_down_is_degraded_on_the_other(redis: Redis) -> None:
    a = RoutingService(shared=SharedHealth(redis, "node-a", interval_s=0.05))
    b = RoutingService(shared=SharedHealth(redis, "node-b", interval_s=0.05))
    unhealthy(a, "eu-west-2")
    assert b.route_call(UK).region == "eu-west-2"

    async with anyio.create_task_group() as tg:
        tg.start_soon(a.share_health)
        tg.start_soon(b.share_health)
        with anyio.fail_after(5):  # a few intervals: a publishes, b reads
            while True:
                await anyio.sleep(0.02)
                if b.snapshot().regions["eu-west-2"].state is HealthState.DEGRADED:
                    break
        keys = sorted(key.decode() if isinstance(key, bytes) else key for key in await redis.keys(KEY_PREFIX + "*"))
        ttl_ms = await redis.pttl(KEY_PREFIX + "node-a")
        tg.cancel_scope.cancel()

    assert keys == ["aybiza:health:node-a", "aybiza:health:node-b"]
    assert 0 < ttl_ms <= 150  # three intervals
    # each node keeps its own measurements; the other's verdict only demotes
    assert a.snapshot().regions["eu-west-2"].state is HealthState.UNHEALTHY
    assert b.health.snapshot().regions["eu-west-2"].state is HealthState.HEALTHY
    assert b.shared is not None and b.shared.nodes == ("node-a",)
    # degraded ranks behind healthy: node b now sends a UK caller to Frankfurt first
    route = b.route_call(UK)
    assert (route.region, route.fallbacks[0]) == ("eu-central-1", "eu-west-2")
    # a clean shutdown withdraws both keys
    assert await redis.keys(KEY_PREFIX + "*") == []


@pytest.mark.anyio
async def test_views_of_a_node_that_stopped_publishing_expire(redis: Redis) -> None:
    a = RoutingService(shared=SharedHealth(redis, "node-a", interval_s=0.05))
    clock = FakeClock()
    b_shared = SharedHealth(redis, "node-b", interval_s=0.05, clock=clock)
    b = RoutingService(shared=b_shared)
    unhealthy(a, "eu-west-2")
    assert a.shared is not None
    await a.shared.publish(a.health.snapshot())  # then node a crashes: no withdraw
    assert await b_shared.sync(b.health.snapshot())
    assert b.snapshot().regions["eu-west-2"].state is HealthState.DEGRADED
    clock.now += 0.151  # past the TTL as read, even before Redis expires the key
    assert b.snapshot().regions["eu-west-2"].state is HealthState.HEALTHY
    await anyio.sleep(0.2)  # Redis has expired the key too: a fresh read finds nobody
    assert await b_shared.sync(b.health.snapshot())
    assert b_shared.nodes == ()


@pytest.mark.anyio
async def test_redis_failures_keep_the_last_views_until_they_expire(caplog: pytest.LogCaptureFixture) -> None:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    clock = FakeClock()
    with RedisServer() as server:  # this test's own server: it is stopped mid-test
        client_a, client_b = redis_client(server.url), redis_client(server.url)
        a = RoutingService(shared=SharedHealth(client_a, "node-a", interval_s=1.0))
        b_shared = SharedHealth(client_b, "node-b", interval_s=1.0, clock=clock)
        b = RoutingService(shared=b_shared)
        unhealthy(a, "eu-west-2")
        assert a.shared is not None
        await a.shared.publish(a.health.snapshot())
        assert await b_shared.sync(b.health.snapshot())
        server.stop()
        with caplog.at_level(logging.WARNING, logger="aybiza.routing.shared"):
            with anyio.fail_after(5):
                assert not await b_shared.sync(b.health.snapshot())
                assert not await b_shared.sync(b.health.snapshot())
        assert len([r for r in caplog.records if "Redis failed" in r.getMessage()]) == 1  # once per outage
        # routing still works, on the last views
        assert b.snapshot().regions["eu-west-2"].state is HealthState.DEGRADED
        assert b.route_call(UK).region == "eu-central-1"
        clock.now += 3.0  # older than the TTL: dropped
        assert b.snapshot().regions["eu-west-2"].state is HealthState.HEALTHY
        assert b.route_call(UK).region == "eu-west-2"
        with anyio.fail_after(5):
            await b_shared.withdraw()  # logs, never raises
        await client_a.aclose()
        await client_b.aclose()


@pytest.mark.anyio
async def test_an_unreadable_snapshot_is_ignored(redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    await redis.set(KEY_PREFIX + "garbled", b"{not json", px=1000)
    await redis.set(KEY_PREFIX + "other", json.dumps(HealthSnapshot.of(
        RegionHealth("us-east-1", breaker=BreakerState.OPEN)).to_dict()))  # no TTL: held one TTL at most
    shared = SharedHealth(redis, "me", interval_s=0.5)
    with caplog.at_level(logging.WARNING, logger="aybiza.routing.shared"):
        assert await shared.sync(HealthSnapshot())
    assert shared.nodes == ("other",)
    assert any("garbled" in record.getMessage() for record in caplog.records)
    merged = shared.merged(HealthSnapshot.of(RegionHealth("us-east-1")))
    assert merged.regions["us-east-1"].state is HealthState.DEGRADED


def test_node_id_and_interval_are_checked() -> None:
    client = redis_client("redis://127.0.0.1:1/0")
    with pytest.raises(ValueError):
        SharedHealth(client, "")
    with pytest.raises(ValueError):
        SharedHealth(client, "n", interval_s=0)
