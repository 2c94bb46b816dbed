"""Agent configurations read through a cache: in-process tier, shared cache (5 minute TTL, jittered), YAML file."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread
from pydantic import ValidationError

from ..agents import AgentConfig, load_agent
from .cache import Cache

__all__ = ["AGENT_NAMESPACE", "AgentConfigs"]

AGENT_NAMESPACE = "agent"
"""Namespace of agent configurations."""


class AgentConfigs:
    """Agent configs read through a cache: in-process tier (30 s), shared cache (5 min ±10 %), YAML file.

    A change to the file is seen within the shared TTL: the shared entry
    carries its expiry time (wall clock, comparable across processes) and the
    in-process copy never outlives it. Concurrent misses for one agent load
    the file once. A cached value that no longer validates (the schema
    changed) is treated as a miss.
    """

    def __init__(
        self,
        cache: Cache,
        directory: Path,
        *,
        ttl_s: float = 300.0,
        local_ttl_s: float = 30.0,
        jitter: float = 0.1,
        loader: Callable[[str, Path], AgentConfig] = load_agent,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self.directory = Path(directory)
        self.ttl_s = ttl_s
        self.local_ttl_s = local_ttl_s
        self.jitter = jitter
        self.loads = 0
        self._loader = loader
        self._clock = clock
        self._local: dict[str, tuple[float, AgentConfig]] = {}
        self._locks: dict[str, anyio.Lock] = {}

    def cached(self, agent_id: str) -> AgentConfig | None:
        """The in-process copy if it is still fresh (no I/O; for synchronous callers)."""
        found = self._local.get(agent_id)
        if found is None or self._clock() >= found[0]:
            return None
        return found[1]

    async def get(self, agent_id: str) -> AgentConfig:
        """The agent's config; raises ConfigError (from the loader) when there is no such agent."""
        found = self.cached(agent_id)
        if found is not None:
            return found
        lock = self._locks.setdefault(agent_id, anyio.Lock())
        async with lock:
            found = self.cached(agent_id)
            if found is not None:
                return found
            shared = await self._shared(agent_id)
            if shared is None:
                agent = await anyio.to_thread.run_sync(self._loader, agent_id, self.directory)
                self.loads += 1
                ttl = self.ttl_s * (1.0 + random.uniform(-self.jitter, self.jitter))
                expires = self._clock() + ttl
                envelope = {"expires": expires, "config": agent.model_dump(mode="json")}
                await self.cache.set_json(AGENT_NAMESPACE, agent_id, envelope, ttl)
            else:
                agent, expires = shared
            if self.local_ttl_s > 0:
                self._local[agent_id] = (min(self._clock() + self.local_ttl_s, expires), agent)
            return agent

    async def _shared(self, agent_id: str) -> tuple[AgentConfig, float] | None:
        envelope = await self.cache.get_json(AGENT_NAMESPACE, agent_id)
        if not isinstance(envelope, dict):
            return None
        try:
            expires = float(envelope["expires"])
            agent = AgentConfig.model_validate(envelope["config"])
        except (KeyError, TypeError, ValueError, ValidationError):
            return None
        if expires <= self._clock():
            return None  # the backend's clock and ours disagree: trust ours
        return agent, expires

    async def invalidate(self, agent_id: str) -> None:
        """Forget ``agent_id`` here and in the shared cache (after its file changed)."""
        self._local.pop(agent_id, None)
        await self.cache.delete(AGENT_NAMESPACE, agent_id)
