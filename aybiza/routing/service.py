"""The routing state of one process: the catalog, live health, the retry budget, and route choice.

Routing decisions stay pure (:func:`~aybiza.routing.router.route`,
:func:`~aybiza.routing.models.choose_model`); this object only holds what
they read — the catalog and the health registry that probes and real
requests keep up to date — and the process-wide retry budget every call's
failover draws on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from .failover import FailoverPolicy, RetryBudget
from .health import HealthRegistry, HealthSnapshot
from .models import choose_model
from .probes import HealthProber, HttpProbe
from .regions import Catalog, default_catalog, load_catalog
from .router import CallInfo, CallRouting, Route, RoutingPolicy, route
from .tiers import TierModel, resolve_model

__all__ = ["RoutingService"]


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
    ) -> None:
        self.catalog = catalog or default_catalog()
        self.policy = policy or RoutingPolicy()
        self.health = HealthRegistry(self.catalog.names)
        self.budget = RetryBudget()
        self.failover = failover or FailoverPolicy()
        self.model_overrides = dict(model_overrides or {})
        self.thinking_budget = thinking_budget

    @classmethod
    def from_file(cls, path: Path | None, **options: object) -> RoutingService:
        """A service over the catalog at ``path`` (the packaged default when None)."""
        return cls(load_catalog(path) if path else None, **options)  # type: ignore[arg-type]

    def snapshot(self) -> HealthSnapshot:
        """The health every routing decision of this process reads now."""
        return self.health.snapshot()

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
        regions = [self.catalog.region(name) for name in self.catalog.names]
        return HealthProber(self.health, regions, HttpProbe(timeout_s), interval_s=interval_s, timeout_s=timeout_s)
