"""The routing state of one process: the catalog, live health, the retry budget, and route choice.

Routing decisions stay pure (:func:`~aybiza.routing.router.route`,
:func:`~aybiza.routing.models.choose_model`); this object only holds what
they read — the catalog, the health registry that probes and real requests
keep up to date, and (with several processes) the other processes' views
through :class:`~aybiza.routing.shared.SharedHealth` — and the process-wide
retry budget every call's failover draws on.

:meth:`RoutingService.from_settings` applies the endpoint override
(``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``) to every region, so Bedrock clients and
health probes both go where the settings say, not to the public AWS hosts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .failover import FailoverPolicy, RetryBudget
from .health import HealthConfig, HealthRegistry, HealthSnapshot
from .models import choose_model
from .probes import HealthProber, HttpProbe, ProbeResult
from .regions import Catalog, default_catalog, load_catalog
from .router import CallInfo, CallRouting, Route, RoutingPolicy, route
from .tiers import TierModel, resolve_model

if TYPE_CHECKING:
    from ..config import Settings
    from .shared import SharedHealth

__all__ = ["RoutingService", "endpoint_catalog"]


def endpoint_catalog(catalog: Catalog, endpoint_url: str) -> Catalog:
    """``catalog`` with every region's Bedrock endpoint *and* probe target at ``endpoint_url``."""
    if not endpoint_url:
        return catalog
    return catalog.with_endpoints({name: endpoint_url for name in catalog.names}, probe_path="")


class RoutingService:
    """Catalog, health and budget shared by every call of a process."""

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        model_overrides: Mapping[str, str] | None = None,
        thinking_budget: int = 1024,
        failover: FailoverPolicy | None = None,
        policy: RoutingPolicy | None = None,
        health_config: HealthConfig | None = None,
        shared: SharedHealth | None = None,
    ) -> None:
        self.catalog = catalog or default_catalog()
        self.policy = policy or RoutingPolicy()
        self.health = HealthRegistry(self.catalog.names, health_config)
        self.shared = shared
        self.budget = RetryBudget()
        self.failover = failover or FailoverPolicy()
        self.model_overrides = dict(model_overrides or {})
        self.thinking_budget = thinking_budget

    @classmethod
    def from_file(cls, path: Path | None, **options: object) -> RoutingService:
        """A service over the catalog at ``path`` (the packaged default when None)."""
        return cls(load_catalog(path) if path else None, **options)  # type: ignore[arg-type]

    @classmethod
    def from_settings(
        cls, settings: Settings, *, shared: SharedHealth | None = None, health_config: HealthConfig | None = None
    ) -> RoutingService:
        """A service as the settings configure it: catalog, endpoint override, model overrides.

        ``catalog_path`` (``AYBIZA_CATALOG_PATH``) picks the catalog; a
        ``bedrock_endpoint_url`` (``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``) becomes every
        region's endpoint and probe target (:func:`endpoint_catalog`).
        """
        catalog = endpoint_catalog(load_catalog(settings.catalog_path), settings.bedrock_endpoint_url)
        return cls(catalog, model_overrides=settings.model_overrides, thinking_budget=settings.thinking_budget,
                   health_config=health_config, shared=shared)

    def snapshot(self) -> HealthSnapshot:
        """The health every routing decision of this process reads now (merged with other nodes' views)."""
        local = self.health.snapshot()
        return self.shared.merged(local) if self.shared is not None else local

    async def share_health(self) -> None:
        """Publish this process's health and read the other nodes' until cancelled (no-op without ``shared``)."""
        if self.shared is not None:
            await self.shared.run(self.health.snapshot)

    def policy_for(self, residency: str | None) -> RoutingPolicy:
        """This service's policy with an agent's residency rule (``EU``/``US``/``APAC``/``caller``) applied.

        An unknown residency is a ``ConfigError``.
        """
        return dataclasses.replace(self.policy, residency=residency) if residency else self.policy

    def route_call(self, caller: str, *, residency: str | None = None, tier: str | None = None) -> Route:
        """Where a call from ``caller`` goes now.

        Raises ``ResidencyRefused`` rather than move the call out of its residency zone.
        """
        return route(CallInfo.from_number(caller, tier), self.snapshot(), self.catalog, self.policy_for(residency))

    def call_routing(self, caller: str, *, residency: str | None = None, tier: str | None = None) -> CallRouting:
        """The sticky per-call router of a call from ``caller``: call ``.next_turn(service.snapshot())`` each turn."""
        return CallRouting(CallInfo.from_number(caller, tier), self.catalog, self.policy_for(residency))

    def model_for(self, region: str, *, quality_tier: str, language: str, cost_so_far: float = 0.0,
                  budget: float | None = None) -> TierModel:
        """The model for the next turn in ``region``: the design's table, within what the region offers."""
        choice = choose_model(quality_tier, language, self.catalog.region(region).tiers, cost_so_far, budget)
        return resolve_model(choice.tier, region, self.model_overrides, thinking=choice.thinking,
                             thinking_budget=self.thinking_budget)

    def prober(self, *, interval_s: float = 2.0, timeout_s: float = 1.5) -> HealthProber:
        """Active probes of every region, feeding this service's health registry."""
        return HealthProber(self.health, self.catalog.regions, HttpProbe(timeout_s), interval_s=interval_s,
                            timeout_s=timeout_s)

    async def probe_once(self, *, timeout_s: float = 1.5) -> dict[str, ProbeResult]:
        """Probe every region once, concurrently, and record the verdicts; each region's result."""
        probe = HttpProbe(timeout_s)
        try:
            return await HealthProber(self.health, self.catalog.regions, probe, timeout_s=timeout_s).check_all()
        finally:
            await probe.aclose()
