"""The cache contract, run against both backends (memory and a real redis-server)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from aybiza.edge.cache import Cache, MemoryCache, RedisCache, open_cache
from aybiza.edge.redis_util import redis_client

pytestmark = pytest.mark.anyio

MakeCache = Callable[..., Cache]


async def test_stores_and_returns_bytes(make_cache: MakeCache) -> None:
    cache = make_cache()
    assert await cache.get("llm", "k") is None
    await cache.set("llm", "k", b"\x00answer\xff")
    assert await cache.get("llm", "k") == b"\x00answer\xff"


async def test_namespaces_are_separate(make_cache: MakeCache) -> None:
    cache = make_cache()
    await cache.set("llm", "same", b"answer")
    await cache.set("tts", "same", b"audio")
    assert await cache.get("llm", "same") == b"answer"
    assert await cache.get("tts", "same") == b"audio"
    await cache.clear("llm")
    assert await cache.get("llm", "same") is None
    assert await cache.get("tts", "same") == b"audio"


async def test_entries_expire_after_their_own_ttl(make_cache: MakeCache) -> None:
    cache = make_cache()
    await cache.set("llm", "short", b"1", ttl_s=0.15)
    await cache.set("llm", "long", b"2", ttl_s=30)
    await cache.set("llm", "forever", b"3", ttl_s=None)
    await anyio.sleep(0.4)
    assert await cache.get("llm", "short") is None
    assert await cache.get("llm", "long") == b"2"
    assert await cache.get("llm", "forever") == b"3"


async def test_default_ttl_applies_when_none_given(make_cache: MakeCache) -> None:
    cache = make_cache(default_ttl_s=0.15)
    await cache.set("agent", "a", b"x")
    await anyio.sleep(0.4)
    assert await cache.get("agent", "a") is None


async def test_lru_bound_evicts_least_recently_used(make_cache: MakeCache) -> None:
    cache = make_cache(max_entries=3)
    for key in ("a", "b", "c"):
        await cache.set("llm", key, key.encode())
    assert await cache.get("llm", "a") == b"a"  # "a" is now the most recently used; "b" the least
    await cache.set("llm", "d", b"d")
    assert await cache.get("llm", "b") is None
    assert [await cache.get("llm", k) for k in ("a", "c", "d")] == [b"a", b"c", b"d"]
    assert cache.stats("llm").evictions == 1


async def test_bound_is_per_namespace(make_cache: MakeCache) -> None:
    cache = make_cache(max_entries={"llm": 1, "*": 5})
    await cache.set("llm", "a", b"1")
    await cache.set("llm", "b", b"2")
    for key in "vwxyz":
        await cache.set("tts", key, b"audio")
    assert await cache.get("llm", "a") is None
    assert await cache.get("llm", "b") == b"2"
    assert all([await cache.get("tts", key) == b"audio" for key in "vwxyz"])
    assert cache.stats("tts").evictions == 0


async def test_counts_hits_misses_and_ratio_per_namespace(make_cache: MakeCache) -> None:
    cache = make_cache()
    await cache.set("llm", "q", b"a")
    for _ in range(3):
        await cache.get("llm", "q")
    await cache.get("llm", "other")
    await cache.get("tts", "nothing")
    llm = cache.snapshot()["llm"]
    assert (llm["hits"], llm["misses"], llm["sets"], llm["hit_ratio"]) == (3, 1, 1, 0.75)
    assert cache.snapshot()["tts"]["hit_ratio"] == 0.0


async def test_overwrite_and_delete(make_cache: MakeCache) -> None:
    cache = make_cache(max_entries=2)
    await cache.set("llm", "k", b"old")
    await cache.set("llm", "k", b"new")
    await cache.set("llm", "j", b"other")
    assert await cache.get("llm", "k") == b"new"  # overwriting did not count as a second entry
    assert await cache.delete("llm", "k") is True
    assert await cache.delete("llm", "k") is False
    assert await cache.get("llm", "k") is None


async def test_json_helpers(make_cache: MakeCache) -> None:
    cache = make_cache()
    await cache.set_json("agent", "cfg", {"greeting": "Hello", "n": 2})
    assert await cache.get_json("agent", "cfg") == {"greeting": "Hello", "n": 2}
    await cache.set("agent", "junk", b"{not json")
    assert await cache.get_json("agent", "junk") is None


async def test_redis_cache_is_shared_by_processes(redis_url: str) -> None:
    first = RedisCache(redis_client(redis_url), owns_client=True, max_entries=2)
    second = RedisCache(redis_client(redis_url), owns_client=True, max_entries=2)
    try:
        await first.set("llm", "a", b"1")
        await second.set("llm", "b", b"2")
        assert await second.get("llm", "a") == b"1"  # written by the other one; now most recent
        await first.set("llm", "c", b"3")  # evicts "b", the least recently used by either
        assert await first.get("llm", "b") is None
        assert await second.get("llm", "a") == b"1"
    finally:
        await first.aclose()
        await second.aclose()


async def test_unreachable_redis_reads_as_a_miss_and_counts_an_error() -> None:
    from aybiza.testing.redis_server import free_port

    cache = open_cache(f"redis://127.0.0.1:{free_port()}/0")
    try:
        await cache.set("llm", "k", b"v")
        assert await cache.get("llm", "k") is None
        stats = cache.stats("llm")
        assert stats.errors == 2 and stats.misses == 1
    finally:
        await cache.aclose()


def test_memory_cache_bounds_bytes() -> None:
    async def main() -> None:
        cache = MemoryCache(max_bytes=10)
        await cache.set("tts", "a", b"12345")
        await cache.set("tts", "b", b"12345")
        await cache.set("tts", "c", b"123")
        assert await cache.get("tts", "a") is None
        assert await cache.get("tts", "c") == b"123"
        await cache.set("tts", "huge", b"x" * 11)  # bigger than the budget: not kept, nothing evicted
        assert await cache.get("tts", "huge") is None and await cache.get("tts", "b") == b"12345"

    anyio.run(main)


async def test_unbounded_namespace_keeps_everything_until_it_expires(make_cache: MakeCache) -> None:
    cache = make_cache(max_entries={"tts": 0, "*": 2})
    for key in "abcde":
        await cache.set("tts", key, key.encode(), ttl_s=0.15)
    assert [await cache.get("tts", key) for key in "abcde"] == [k.encode() for k in "abcde"]
    await anyio.sleep(0.4)
    assert await cache.get("tts", "a") is None
    assert cache.stats("tts").evictions == 0
