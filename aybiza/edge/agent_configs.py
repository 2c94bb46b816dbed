"""Agent configurations read through a cache, so an edited agent file is picked up without a restart.

Two tiers in front of the YAML file (docs/routing.md §3.5): the shared
:class:`~aybiza.edge.cache.Cache` (namespace ``agent``; Redis when processes
share one) holds each config for ``ttl_s`` (5 minutes unless
``AYBIZA_AGENT_TTL`` says otherwise), and an in-process copy is kept for at
most ``min(30 s, ttl_s)``. The TTL is an upper bound: jitter only shortens
it, and the in-process copy never outlives the shared entry, so an edit is
served within ``ttl_s`` of being saved.

An edit that does not load (bad YAML, a field that fails validation) does
not take the agent down: the last good config is served for another TTL
and a warning naming the file and the error is logged once per distinct
error. A deleted file ends the agent once its cached config expires: then
lookups raise :class:`~aybiza.errors.ConfigError`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
from pydantic import ValidationError

from ..agents import AgentConfig, agent_exists, load_agent
from ..config import Settings
from ..errors import ConfigError
from .cache import Cache

__all__ = ["AGENT_NAMESPACE", "LOCAL_TTL_S", "AgentConfigs"]

log = logging.getLogger("aybiza.edge.agent_configs")

AGENT_NAMESPACE = "agent"
"""Cache namespace of agent configurations (also the metrics namespace of :attr:`AgentConfigs.on_lookup`)."""

LOCAL_TTL_S = 30.0
"""Longest time an in-process copy is served without asking the shared cache."""


@dataclass(slots=True)
class _Flight:
    """The lock that makes concurrent misses for one agent load its file once, and who waits on it."""

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    users: int = 0


class AgentConfigs:
    """Agent configs by id: in-process copy, shared cache, then ``<directory>/<id>.yaml``.

    ``on_lookup(hit)`` is called once per :meth:`get`: True when a cache tier
    answered, False when the file was read (or the lookup failed).
    ``clock`` is wall-clock seconds: shared entries carry their expiry time,
    which must be comparable across processes.
    """

    def __init__(
        self,
        cache: Cache,
        directory: str | Path,
        *,
        ttl_s: float = 300.0,
        local_ttl_s: float = LOCAL_TTL_S,
        jitter: float = 0.1,
        loader: Callable[[str, Path], AgentConfig] = load_agent,
        clock: Callable[[], float] = time.time,
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, not {ttl_s}")
        self.cache = cache
        self.directory = Path(directory)
        self.ttl_s = ttl_s
        self.local_ttl_s = max(0.0, min(local_ttl_s, ttl_s))
        self.jitter = min(max(jitter, 0.0), 1.0)
        self.on_lookup = on_lookup
        self.loads = 0
        """How many times an agent file was read."""
        self._loader = loader
        self._clock = clock
        self._local: dict[str, tuple[float, AgentConfig]] = {}
        self._last_good: dict[str, AgentConfig] = {}
        self._reported: dict[str, str] = {}
        self._flights: dict[str, _Flight] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        cache: Cache,
        *,
        on_lookup: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> AgentConfigs:
        """Agents in ``settings.agents_dir``, cached for ``settings.agent_ttl_s`` (``AYBIZA_AGENT_TTL``)."""
        return cls(cache, settings.agents_dir, ttl_s=settings.agent_ttl_s, on_lookup=on_lookup, clock=clock)

    def exists(self, agent_id: str) -> bool:
        """Whether ``agent_id`` is a valid id whose file is present now (one ``stat``; caches not consulted)."""
        return agent_exists(agent_id, self.directory)

    def cached(self, agent_id: str) -> AgentConfig | None:
        """The in-process copy if it is still fresh (no I/O; for synchronous callers)."""
        found = self._local.get(agent_id)
        if found is None or self._clock() >= found[0]:
            return None
        return found[1]

    async def get(self, agent_id: str) -> AgentConfig:
        """The agent's config; raises ConfigError when there is no such agent (or its only version is broken)."""
        found = self.cached(agent_id)
        if found is not None:
            self._looked_up(True)
            return found
        flight = self._flights.get(agent_id)
        if flight is None:
            flight = self._flights[agent_id] = _Flight()
        flight.users += 1
        try:
            async with flight.lock:
                agent, hit = await self._get_locked(agent_id)
        except Exception:
            self._looked_up(False)
            raise
        finally:
            flight.users -= 1
            if flight.users == 0:
                del self._flights[agent_id]
        self._looked_up(hit)
        return agent

    async def invalidate(self, agent_id: str) -> None:
        """Forget ``agent_id`` here and in the shared cache, so the next lookup reads the file."""
        self._local.pop(agent_id, None)
        await self.cache.delete(AGENT_NAMESPACE, agent_id)

    async def _get_locked(self, agent_id: str) -> tuple[AgentConfig, bool]:
        """``(config, hit)`` for a lookup that missed the in-process tier; the caller holds the agent's lock."""
        found = self.cached(agent_id)  # loaded by the lookup we waited for
        if found is not None:
            return found, True
        shared = await self._shared(agent_id)
        if shared is not None:
            agent, expires = shared
            hit = True
        else:
            agent = await self._load(agent_id)
            expires = await self._publish(agent_id, agent)
            hit = False
        self._last_good[agent_id] = agent
        if self.local_ttl_s > 0:
            self._local[agent_id] = (min(self._clock() + self.local_ttl_s, expires), agent)
        return agent, hit

    async def _shared(self, agent_id: str) -> tuple[AgentConfig, float] | None:
        envelope = await self.cache.get_json(AGENT_NAMESPACE, agent_id)
        if not isinstance(envelope, dict):
            return None
        try:
            expires = float(envelope["expires"])
            agent = AgentConfig.model_validate(envelope["config"])
        except (KeyError, TypeError, ValueError, ValidationError):
            return None  # written by another version of the schema: a miss
        if expires <= self._clock():
            return None  # the backend's clock and ours disagree: trust ours
        return agent, expires

    async def _load(self, agent_id: str) -> AgentConfig:
        """The file's config; the last good one if the file is broken; ConfigError if it is gone."""
        self.loads += 1
        try:
            agent = await anyio.to_thread.run_sync(self._loader, agent_id, self.directory)
        except ConfigError as error:
            if not self.exists(agent_id):  # deleted, or never was: no such agent
                self._last_good.pop(agent_id, None)
                self._local.pop(agent_id, None)
                self._reported.pop(agent_id, None)
                raise
            last_good = self._last_good.get(agent_id)
            if last_good is None:
                raise
            if self._reported.get(agent_id) != str(error):
                self._reported[agent_id] = str(error)
                log.warning("agent %s: %s does not load, still serving its last good config: %s",
                            agent_id, self.directory / f"{agent_id}.yaml", error)
            return last_good
        if self._reported.pop(agent_id, None) is not None:
            log.info("agent %s: %s loads again", agent_id, self.directory / f"{agent_id}.yaml")
        return agent

    async def _publish(self, agent_id: str, agent: AgentConfig) -> float:
        """Put ``agent`` in the shared cache for ``ttl_s`` less up to ``jitter`` of it; return its expiry."""
        ttl = self.ttl_s * (1.0 - random.uniform(0.0, self.jitter))
        expires = self._clock() + ttl
        envelope = {"expires": expires, "config": agent.model_dump(mode="json")}
        await self.cache.set_json(AGENT_NAMESPACE, agent_id, envelope, ttl)
        return expires

    def _looked_up(self, hit: bool) -> None:
        if self.on_lookup is not None:
            self.on_lookup(hit)
