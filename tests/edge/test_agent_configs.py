"""Agent configs read through the cache: edits picked up within the TTL, broken edits survived, deletions seen."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from aybiza.agents import AgentConfig, load_agent
from aybiza.config import Settings
from aybiza.edge.agent_configs import AgentConfigs
from aybiza.edge.cache import Cache, MemoryCache
from aybiza.errors import ConfigError

pytestmark = pytest.mark.anyio

MakeCache = Callable[..., Cache]


def _write_agent(directory: Path, greeting: str, *, agent_id: str = "shop") -> None:
    (directory / f"{agent_id}.yaml").write_text(
        f"name: Shop\ngreeting: {greeting}\nsystem_prompt: Be brief.\nfallback: Sorry?\n", encoding="utf-8"
    )


class Clock:
    """Wall-clock seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _configs(directory: Path, clock: Clock, **kwargs: object) -> AgentConfigs:
    """Configs over a memory cache on the same fake clock, without jitter unless asked."""
    kwargs.setdefault("jitter", 0.0)
    return AgentConfigs(MemoryCache(clock=clock), directory, clock=clock, **kwargs)  # type: ignore[arg-type]


async def _greeting(configs: AgentConfigs, agent_id: str = "shop") -> str:
    return (await configs.get(agent_id)).greeting


async def test_reads_through_the_cache_until_invalidated(tmp_path: Path, make_cache: MakeCache) -> None:
    _write_agent(tmp_path, "Hello")
    cache = make_cache()
    configs = AgentConfigs(cache, tmp_path, local_ttl_s=0)
    assert await _greeting(configs) == "Hello"
    _write_agent(tmp_path, "Changed")
    assert await _greeting(configs) == "Hello"  # served from the shared cache
    assert configs.loads == 1 and cache.stats("agent").hits == 1
    await configs.invalidate("shop")
    assert await _greeting(configs) == "Changed"
    assert configs.loads == 2


async def test_an_edit_is_picked_up_after_five_minutes_not_before(tmp_path: Path, clock: Clock) -> None:
    _write_agent(tmp_path, "Hello")
    configs = _configs(tmp_path, clock)
    assert await _greeting(configs) == "Hello"
    _write_agent(tmp_path, "Changed")
    clock.advance(299.0)
    assert await _greeting(configs) == "Hello"
    clock.advance(1.0)
    assert await _greeting(configs) == "Changed"
    assert configs.loads == 2


async def test_jitter_only_shortens_the_ttl(tmp_path: Path, clock: Clock) -> None:
    configs = _configs(tmp_path, clock, jitter=0.5)
    for index in range(20):
        _write_agent(tmp_path, "Hello", agent_id=f"a{index}")
        await configs.get(f"a{index}")
    clock.advance(149.0)
    assert configs.loads == 20
    for index in range(20):
        _write_agent(tmp_path, "Changed", agent_id=f"a{index}")
    clock.advance(151.0)  # 300 s: every entry has expired, whatever its jitter
    assert [await _greeting(configs, f"a{index}") for index in range(20)] == ["Changed"] * 20


async def test_the_in_process_copy_never_outlives_a_short_ttl(tmp_path: Path, clock: Clock) -> None:
    _write_agent(tmp_path, "Hello")
    configs = _configs(tmp_path, clock, ttl_s=10.0)
    assert configs.local_ttl_s == 10.0
    await configs.get("shop")
    _write_agent(tmp_path, "Changed")
    clock.advance(9.9)
    assert configs.cached("shop") is not None and await _greeting(configs) == "Hello"
    clock.advance(0.1)
    assert configs.cached("shop") is None
    assert await _greeting(configs) == "Changed"


async def test_agent_ttl_setting_shortens_the_ttl(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AYBIZA_CONFIG", raising=False)
    monkeypatch.setenv("AYBIZA_AGENT_TTL", "20")
    _write_agent(tmp_path, "Hello")
    configs = AgentConfigs.from_settings(Settings(agents_dir=tmp_path), MemoryCache(clock=clock), clock=clock)
    assert configs.ttl_s == 20.0 and configs.local_ttl_s == 20.0 and configs.directory == tmp_path
    await configs.get("shop")
    _write_agent(tmp_path, "Changed")
    clock.advance(17.0)  # before the TTL less the most jitter can take off
    assert await _greeting(configs) == "Hello"
    clock.advance(3.0)
    assert await _greeting(configs) == "Changed"


async def test_a_broken_edit_keeps_the_last_good_config_and_warns_once_per_error(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aybiza.edge.agent_configs")
    _write_agent(tmp_path, "Hello")
    configs = _configs(tmp_path, clock, ttl_s=60.0)
    await configs.get("shop")
    (tmp_path / "shop.yaml").write_text("name: [unclosed\ngreeting: Broken\n", encoding="utf-8")
    for _ in range(5):  # five TTLs: the file is read again each time, the warning is not repeated
        clock.advance(60.0)
        assert await _greeting(configs) == "Hello"
    assert configs.loads == 6
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert str(tmp_path / "shop.yaml") in warnings[0] and "not valid YAML" in warnings[0]

    (tmp_path / "shop.yaml").write_text("name: Shop\ngreeting: Hi\nsystem_prompt: x\n", encoding="utf-8")
    clock.advance(60.0)
    assert await _greeting(configs) == "Hello"
    assert len(caplog.records) == 2 and "fallback" in caplog.records[1].getMessage()  # a new error: told again

    _write_agent(tmp_path, "Fixed")
    clock.advance(60.0)
    assert await _greeting(configs) == "Fixed"


async def test_a_broken_file_without_a_last_good_config_is_a_config_error(tmp_path: Path, clock: Clock) -> None:
    (tmp_path / "shop.yaml").write_text("greeting: [unclosed\n", encoding="utf-8")
    configs = _configs(tmp_path, clock)
    with pytest.raises(ConfigError, match="shop.yaml"):
        await configs.get("shop")


async def test_processes_sharing_a_cache_serve_the_last_good_config_of_a_broken_agent(
    tmp_path: Path, clock: Clock
) -> None:
    _write_agent(tmp_path, "Hello")
    shared = MemoryCache(clock=clock)
    first = AgentConfigs(shared, tmp_path, jitter=0.0, clock=clock)
    await first.get("shop")
    (tmp_path / "shop.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    clock.advance(300.0)
    assert await _greeting(first) == "Hello"  # the file is broken: the last good one is shared again
    started_later = AgentConfigs(shared, tmp_path, jitter=0.0, clock=clock)
    assert await _greeting(started_later) == "Hello"
    assert started_later.loads == 0


async def test_a_deleted_agent_is_gone_after_the_ttl(tmp_path: Path, clock: Clock) -> None:
    _write_agent(tmp_path, "Hello")
    configs = _configs(tmp_path, clock)
    await configs.get("shop")
    (tmp_path / "shop.yaml").unlink()
    assert not configs.exists("shop")
    clock.advance(299.0)
    assert await _greeting(configs) == "Hello"
    clock.advance(1.0)
    with pytest.raises(ConfigError, match="no file"):
        await configs.get("shop")
    _write_agent(tmp_path, "Back")  # a new file is a new agent, not a broken edit of the old one
    assert await _greeting(configs) == "Back"


async def test_on_lookup_reports_hits_and_misses_of_the_cache_tiers(tmp_path: Path, clock: Clock) -> None:
    _write_agent(tmp_path, "Hello")
    lookups: list[bool] = []
    configs = _configs(tmp_path, clock, on_lookup=lookups.append)
    await configs.get("shop")  # file
    await configs.get("shop")  # in-process copy
    clock.advance(30.0)
    await configs.get("shop")  # shared cache
    clock.advance(270.0)
    await configs.get("shop")  # expired: file
    with pytest.raises(ConfigError):
        await configs.get("nobody")
    assert lookups == [False, True, True, False, False]


async def test_concurrent_misses_load_the_file_once(tmp_path: Path) -> None:
    _write_agent(tmp_path, "Hello")
    loads: list[str] = []
    lookups: list[bool] = []

    def slow_loader(agent_id: str, directory: Path) -> AgentConfig:
        loads.append(agent_id)
        return load_agent(agent_id, directory)

    configs = AgentConfigs(MemoryCache(), tmp_path, loader=slow_loader, on_lookup=lookups.append)
    assert configs.cached("shop") is None
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(configs.get, "shop")
    assert loads == ["shop"]
    assert sorted(lookups) == [False] + [True] * 9
    cached = configs.cached("shop")
    assert cached is not None and cached.greeting == "Hello"


async def test_unknown_agent_is_a_config_error(tmp_path: Path) -> None:
    configs = AgentConfigs(MemoryCache(), tmp_path)
    with pytest.raises(ConfigError):
        await configs.get("nobody")
    with pytest.raises(ConfigError, match="invalid agent id"):
        await configs.get("../secret")


def test_exists_checks_the_file_and_the_id(tmp_path: Path) -> None:
    _write_agent(tmp_path, "Hello")
    (tmp_path / "folder.yaml").mkdir()
    configs = AgentConfigs(MemoryCache(), tmp_path)
    assert configs.exists("shop")
    assert not configs.exists("nobody")
    assert not configs.exists("folder")
    assert not configs.exists("../shop") and not configs.exists("shop.yaml") and not configs.exists("")
