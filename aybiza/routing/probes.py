"""Active health probes: the only I/O in :mod:`aybiza.routing`.

A :data:`Probe` checks one region (returns on success, raises on failure);
:class:`HttpProbe` is the production one. :class:`HealthProber` times probes,
bounds them with a timeout and feeds each verdict to a
:class:`~aybiza.routing.health.HealthRegistry`, whose state machines decide
what the verdicts mean.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from aybiza.routing.health import BreakerState, HealthRegistry, HealthState
from aybiza.routing.regions import Region

if TYPE_CHECKING:
    import httpx

__all__ = ["Probe", "ProbeResult", "HttpProbe", "HealthProber", "describe_failure"]

_log = logging.getLogger("aybiza.routing.probes")

Probe = Callable[[Region], Awaitable[Any]]
"""Checks one region; returns on success, raises on failure. The prober times it."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe of one region: how long it took, or why it failed."""

    region: str
    target: str
    latency_s: float | None
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether the region answered."""
        return self.latency_s is not None


def describe_failure(error: BaseException, timeout_s: float) -> str:
    """A short, human reason for a failed probe (``no answer within 1.5 s``, ``ConnectError: ...``)."""
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class HttpProbe:
    """GET the region's probe URL; any HTTP answer below 500 means reachable.

    One keep-alive client for all regions, so probes also keep connections warm.
    """

    def __init__(self, timeout_s: float = 1.5, client: httpx.AsyncClient | None = None) -> None:
        if client is None:
            import httpx  # imported here so importing routing stays light

            client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._client = client

    async def __call__(self, region: Region) -> None:
        response = await self._client.get(region.probe_target)
        if response.status_code >= 500:
            raise OSError(f"probe of {region.name} answered HTTP {response.status_code}")

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()


class HealthProber:
    """Probes every region concurrently on an interval and feeds the registry.

    Intervals follow docs/routing.md section 7.1: ``interval_s`` while healthy,
    ``unhealthy_interval_s`` otherwise, ``edge_interval_s`` right after a state
    change, with +-``jitter``; each probe is bounded by ``timeout_s``. The first
    passing probe of a region (at start, and after a failure, when the connection
    was likely dropped) only warms the connection: it counts as a pass, but its
    time includes the handshake and is not taken as a latency sample.
    """

    def __init__(
        self,
        registry: HealthRegistry,
        regions: Sequence[Region],
        probe: Probe,
        *,
        interval_s: float = 2.0,
        unhealthy_interval_s: float = 1.0,
        edge_interval_s: float = 0.5,
        timeout_s: float = 1.5,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        self.registry = registry
        self.regions = tuple(regions)
        self.probe = probe
        self.interval_s = interval_s
        self.unhealthy_interval_s = unhealthy_interval_s
        self.edge_interval_s = edge_interval_s
        self.timeout_s = timeout_s
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._warm: set[str] = set()

    async def check(self, region: Region) -> ProbeResult:
        """Probe one region and record the verdict; returns the latency or the reason it failed."""
        started = time.perf_counter()
        try:
            with anyio.fail_after(self.timeout_s):
                await self.probe(region)
        except Exception as exc:  # any failure of the probe is a verdict, not a crash
            if _log.isEnabledFor(logging.DEBUG):
                _log.debug("probe of %s failed: %r", region.name, exc)
            self.registry.record_probe(region.name, False)
            self._warm.discard(region.name)
            return ProbeResult(region.name, region.probe_target, None, describe_failure(exc, self.timeout_s))
        latency = time.perf_counter() - started
        sample = latency if region.name in self._warm else None
        self._warm.add(region.name)
        self.registry.record_probe(region.name, True, sample)
        return ProbeResult(region.name, region.probe_target, latency)

    async def probe_region(self, region: Region) -> float | None:
        """Probe one region, record the verdict; returns the latency in seconds or ``None``."""
        return (await self.check(region)).latency_s

    async def check_all(self) -> dict[str, ProbeResult]:
        """Probe all regions at once; returns each one's result, in catalog order."""
        results: dict[str, ProbeResult] = {}

        async def one(region: Region) -> None:
            results[region.name] = await self.check(region)

        async with anyio.create_task_group() as tg:
            for region in self.regions:
                tg.start_soon(one, region)
        return {region.name: results[region.name] for region in self.regions}

    async def probe_once(self) -> dict[str, float | None]:
        """Probe all regions at once; returns each one's latency (``None`` = failed)."""
        return {name: result.latency_s for name, result in (await self.check_all()).items()}

    async def run(self) -> None:
        """Probe forever (until cancelled), one loop per region so a slow one delays no other."""
        async with anyio.create_task_group() as tg:
            for region in self.regions:
                tg.start_soon(self._loop, region)

    async def _loop(self, region: Region) -> None:
        tracker = self.registry.tracker(region.name)
        while True:
            before = (tracker.state, tracker.breaker.state)
            await self.check(region)
            after = (tracker.state, tracker.breaker.state)
            if after != before:
                delay = self.edge_interval_s
            elif after == (HealthState.HEALTHY, BreakerState.CLOSED):
                delay = self.interval_s
            else:
                delay = self.unhealthy_interval_s
            await anyio.sleep(delay * (1.0 + self._rng.uniform(-self.jitter, self.jitter)))
