"""A Redis client for the call path: sub-second timeouts, two quick retries, one pool per process.

redis-py's defaults (5 s socket and connect timeouts, ten retries with
backoff up to a second) suit batch jobs, not a caller waiting for an answer
(docs/routing.md §3.7). :func:`redis_client` builds an asyncio client
whose every command either answers in a fraction of a second or raises one
of :data:`REDIS_ERRORS`, so callers can fall back to local state.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["REDIS_ERRORS", "redis_client"]

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
"""What a Redis command on the call path may raise: catch these and fall back."""


def redis_client(
    url: str,
    *,
    timeout_s: float = 0.25,
    connect_timeout_s: float = 0.25,
    pool_timeout_s: float = 0.2,
    max_connections: int = 64,
    retries: int = 2,
    health_check_interval_s: int = 15,
) -> Redis:
    """An asyncio Redis client with call-path timeouts (bytes in, bytes out).

    ``timeout_s`` bounds each socket read/write, ``connect_timeout_s`` a new
    connection, ``pool_timeout_s`` the wait for a free pooled connection.
    Connection and timeout errors are retried ``retries`` times with 10-100 ms
    jittered backoff. Close the client with ``await client.aclose()``.
    """
    retry = Retry(
        ExponentialWithJitterBackoff(base=0.01, cap=0.1),
        retries=retries,
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_keepalive=True,
        health_check_interval=health_check_interval_s,
        retry=retry,
    )
    return Redis.from_pool(pool)
