"""Fixtures for the edge state tests: a real redis-server and a real PostgreSQL, started once per session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis

from aybiza.edge.cache import Cache, MemoryCache, RedisCache
from aybiza.edge.redis_util import redis_client
from aybiza.testing.postgres_server import PostgresServer, postgres_bin_dir
from aybiza.testing.redis_server import RedisServer, redis_server_binary


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (skips only if the Debian package is not installed)."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session's Redis, emptied before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    yield redis_server.url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session (skips only if the Debian package is not installed)."""
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The session's PostgreSQL with the archive table dropped before each test."""
    import psycopg

    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS aybiza_calls")
    yield postgres_server.url


@pytest.fixture(params=["memory", "redis"])
async def make_cache(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Cache]]:
    """A factory of caches of one backend (each Redis cache has its own client)."""
    made: list[Cache] = []

    def make(**kwargs: object) -> Cache:
        if request.param == "memory":
            cache: Cache = MemoryCache(**kwargs)  # type: ignore[arg-type]
        else:
            url = request.getfixturevalue("redis_url")
            cache = RedisCache(redis_client(url), owns_client=True, **kwargs)  # type: ignore[arg-type]
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.aclose()
