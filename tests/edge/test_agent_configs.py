"""Agent configs read through the cache (memory and a real redis-server)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from aybiza.agents import AgentConfig, load_agent
from aybiza.edge.agent_configs import AgentConfigs
from aybiza.edge.cache import Cache, MemoryCache
from aybiza.errors import ConfigError

pytestmark = pytest.mark.anyio

MakeCache = Callable[..., Cache]


def _write_agent(directory: Path, greeting: str) -> None:
    (directory / "shop.yaml").write_text(
        f"name: Shop\ngreeting: {greeting}\nsystem_prompt: Be brief.\nfallback: Sorry?\n", encoding="utf-8"
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_agent_configs_read_through_and_expire(tmp_path: Path, make_cache: MakeCache) -> None:
    _write_agent(tmp_path, "Hello")
    cache = make_cache()
    agents = AgentConfigs(cache, tmp_path, local_ttl_s=0)
    assert (await agents.get("shop")).greeting == "Hello"
    _write_agent(tmp_path, "Changed")
    assert (await agents.get("shop")).greeting == "Hello"  # served from the cache
    assert agents.loads == 1
    await agents.invalidate("shop")
    assert (await agents.get("shop")).greeting == "Changed"
    assert agents.loads == 2
    assert cache.stats("agent").hits == 1


async def test_agent_config_cache_ttl_is_five_minutes_by_default(tmp_path: Path) -> None:
    _write_agent(tmp_path, "Hello")
    clock = Clock()
    cache = MemoryCache(clock=clock)
    agents = AgentConfigs(cache, tmp_path, jitter=0.0, clock=clock)
    await agents.get("shop")
    _write_agent(tmp_path, "Changed")
    clock.now = 299.0
    assert (await agents.get("shop")).greeting == "Hello"
    clock.now = 301.0
    assert (await agents.get("shop")).greeting == "Changed"
    assert agents.loads == 2


async def test_agent_configs_local_tier_and_single_flight(tmp_path: Path) -> None:
    _write_agent(tmp_path, "Hello")
    loads: list[str] = []

    def slow_loader(agent_id: str, directory: Path) -> AgentConfig:
        loads.append(agent_id)
        return load_agent(agent_id, directory)

    agents = AgentConfigs(MemoryCache(), tmp_path, loader=slow_loader)
    assert agents.cached("shop") is None
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(agents.get, "shop")
    assert loads == ["shop"]
    cached = agents.cached("shop")
    assert cached is not None and cached.greeting == "Hello"


async def test_unknown_agent_is_a_config_error(tmp_path: Path) -> None:
    agents = AgentConfigs(MemoryCache(), tmp_path)
    with pytest.raises(ConfigError):
        await agents.get("nobody")
