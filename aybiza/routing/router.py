"""Region choice for a call: a pure function of the call, a health snapshot, the catalog and policy.

``route(call, health, catalog, policy)`` scores every region the design's way::

    base     = max(0, latency_budget_ms - latency_ms)   # measured RTT, else the catalog's prior
    total    = base + 200 (same country) + 150 (same continent) + 100 (primary region)
               - penalties (degraded, load, throttling)

A region is *eligible* unless it is outside the call's residency zone, unhealthy,
behind an open breaker, degraded with latency >= 500 ms, or at capacity (when every
region that may take the call is only slow, the best of the slow ones is used: a
late answer beats none). The
choice is the first *healthy* region in the caller's preference list (catalog
data), else the best score; the other eligible regions follow as fallbacks,
preference list first, then by score. No eligible region raises
:class:`NoEligibleRegion` unless the policy allows panic routing.

The residency zone (docs/routing.md section 7.3) comes from the policy:

* ``residency="EU" | "US" | "APAC"`` (the agent's rule): the call's data stays in
  that zone's regions whatever the caller's country;
* ``residency="caller"``: it stays in the caller's own zone
  (:func:`~aybiza.routing.countries.residency_zone_of`);
* otherwise ``data_residency`` keeps callers whose own zone is listed in
  ``residency_zones`` (by default EU/UK callers) inside it, and routes the rest freely.

When residency applies and no region of the zone is eligible, or a ``caller``
rule meets a caller whose country has no zone, :func:`route` raises
:class:`ResidencyRefused`: an explicit refusal, never a silent move.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from aybiza.errors import CallError, ConfigError
from aybiza.routing.countries import continent_of, locate_number, residency_zone_of
from aybiza.routing.health import BreakerState, HealthSnapshot, HealthState, RegionHealth
from aybiza.routing.regions import KNOWN_TIERS, ZONES, Catalog, Region

__all__ = [
    "CALLER_RESIDENCY",
    "parse_residency",
    "CallInfo",
    "RoutingPolicy",
    "ScoreRow",
    "Route",
    "NoEligibleRegion",
    "ResidencyRefused",
    "route",
    "keep_sticky",
    "CallRouting",
    "format_route_table",
    "format_score_table",
]


CALLER_RESIDENCY = "caller"
"""The residency rule that keeps a call's data in the caller's own zone."""


def parse_residency(value: str | None) -> str | None:
    """A residency setting as routing uses it: ``"EU"``, ``"US"``, ``"APAC"``, ``"caller"`` or ``None``.

    Case and surrounding blanks are ignored; anything else is a :class:`ConfigError`.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.lower() == CALLER_RESIDENCY:
        return CALLER_RESIDENCY
    if text.upper() in ZONES:
        return text.upper()
    raise ConfigError(f"unknown residency {value!r}; use {', '.join(ZONES)} or {CALLER_RESIDENCY}")


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What routing needs to know about a call."""

    caller_country: str = ""
    area: str = ""
    tier: str | None = None
    caller: str = ""

    @classmethod
    def from_number(cls, number: str, tier: str | None = None) -> CallInfo:
        """Locate an E.164 caller number (``+447700900123`` -> GB)."""
        location = locate_number(number)
        return cls(location.country, location.area, tier, number)


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """The agent's routing rules and the score's weights.

    ``residency`` (a zone or ``"caller"``, see :func:`parse_residency`) is the
    agent's rule and wins; without it, ``data_residency`` keeps callers whose own
    zone is in ``residency_zones`` inside that zone.
    """

    data_residency: bool = False
    residency_zones: frozenset[str] = frozenset({"EU"})
    residency: str | None = None
    latency_budget_ms: float = 1000.0
    country_bonus: float = 200.0
    continent_bonus: float = 150.0
    primary_bonus: float = 100.0
    tier_bonus: float = 50.0
    degraded_penalty: float = 100.0
    degraded_max_latency_ms: float = 500.0
    load_penalty: float = 100.0
    throttle_penalty: float = 300.0
    unknown_latency_ms: float = 300.0
    use_preference: bool = True
    require_tier: bool = False
    allow_panic: bool = False
    max_fallbacks: int = 4
    switch_after_turns: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "residency", parse_residency(self.residency))


@dataclass(frozen=True, slots=True)
class ScoreRow:
    """One line of the score table: how a region scored and whether it may be used."""

    region: str
    zone: str
    state: str
    breaker: str
    latency_ms: float
    latency_source: str
    base: float
    country_bonus: float
    continent_bonus: float
    primary_bonus: float
    tier_bonus: float
    penalty: float
    total: float
    preference_rank: int | None
    eligible: bool
    note: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    """The chosen region, the fallbacks in order, the tier it can serve, and why."""

    region: str
    fallbacks: tuple[str, ...]
    tier: str | None
    call: CallInfo
    residency_zone: str
    reason: str
    scores: tuple[ScoreRow, ...] = field(default=(), repr=False)
    panic: bool = False

    @property
    def regions(self) -> tuple[str, ...]:
        """The region followed by its fallbacks: the order a turn tries them in."""
        return (self.region, *self.fallbacks)


class NoEligibleRegion(CallError):
    """No region may take this call (all unhealthy, or none healthy inside the residency zone)."""

    def __init__(self, message: str, *, call: CallInfo, residency_zone: str, scores: Sequence[ScoreRow] = ()) -> None:
        super().__init__(message)
        self.call = call
        self.residency_zone = residency_zone
        self.scores = tuple(scores)


class ResidencyRefused(NoEligibleRegion):
    """The call's residency rule leaves it no region: its zone has none eligible, or the caller has no zone."""


def route(
    call: CallInfo,
    health: HealthSnapshot,
    catalog: Catalog,
    policy: RoutingPolicy | None = None,
) -> Route:
    """Choose a region and ordered fallbacks for ``call``; raises :class:`NoEligibleRegion`."""
    policy = policy or RoutingPolicy()
    country = call.caller_country.upper()
    continent = continent_of(country)
    placement = catalog.placement(country, call.area)
    zone = _residency_zone(country, policy)
    preference = {name: rank for rank, name in enumerate(placement.preference, start=1)}

    rows = [
        _score_row(
            region,
            health.get(region.name),
            call,
            country,
            continent,
            zone or "",
            placement.edge,
            preference.get(region.name),
            catalog,
            policy,
        )
        for region in catalog.regions
    ]

    by_score = sorted(rows, key=lambda row: (-row.total, row.region))
    who = f"{call.caller or 'a caller'} from {country or 'an unknown country'}"
    if zone is None:
        refused = [dataclasses.replace(row, eligible=False, note="caller has no residency zone") for row in by_score]
        raise ResidencyRefused(
            f"residency refused: the agent keeps data in the caller's own zone, but {who} is in no residency "
            f"zone ({', '.join(ZONES)})",
            call=call,
            residency_zone="",
            scores=refused,
        )
    eligible = [row for row in by_score if row.eligible]
    panic = False
    slow_only = False
    if not eligible:
        # Regions that answer, only slowly, are better than no answer: take them, best score first.
        eligible = [row for row in by_score if row.note.startswith("degraded at")]
        slow_only = bool(eligible)
    if not eligible:
        # Only health put them out of reach: panic routing may still try them, least recently failed first.
        allowed = [
            row for row in by_score if row.note in ("unhealthy", "breaker open") or row.note.startswith("degraded")
        ]
        if not (policy.allow_panic and allowed):
            reasons = ", ".join(f"{row.region}: {row.note}" for row in by_score)
            if zone:
                raise ResidencyRefused(
                    f"residency refused: no eligible region inside {zone} residency for {who}, and the call "
                    f"may not leave {zone} ({reasons})",
                    call=call,
                    residency_zone=zone,
                    scores=by_score,
                )
            raise NoEligibleRegion(
                f"no healthy region for {who} ({reasons})", call=call, residency_zone=zone, scores=by_score
            )
        failed_at = {name: view.failed_at or 0.0 for name, view in health.regions.items()}
        eligible = sorted(allowed, key=lambda row: (failed_at.get(row.region, 0.0), -row.total, row.region))
        panic = True

    eligible_names = [row.region for row in eligible]
    by_name = {row.region: row for row in eligible}
    healthy_preferred = [
        name for name in placement.preference if name in by_name and by_name[name].state in ("healthy", "unknown")
    ]
    if panic:
        order = eligible_names
        reason = "panic: no region is healthy; trying the least recently failed first"
    elif slow_only:
        order = eligible_names
        reason = "every region that may take the call is slow: the best of them"
    elif policy.use_preference and healthy_preferred:
        rest_preferred = [name for name in placement.preference if name in by_name and name not in healthy_preferred]
        head = healthy_preferred + rest_preferred
        order = head + [name for name in eligible_names if name not in head]
        first = "first" if healthy_preferred[0] == placement.preference[0] else "first healthy"
        reason = f"{first} region in the preference list ({', '.join(placement.preference)})"
    else:
        order = eligible_names
        reason = "best score"
        if placement.preference:
            in_zone = not zone or any(catalog.region(name).zone == zone for name in placement.preference)
            reason += " (no preferred region is healthy)" if in_zone else f" (no preferred region is in {zone})"
    if zone:
        reason += f"; {zone} residency"

    chosen = order[0]
    tier = _fit_tier(call.tier, catalog.region(chosen).tiers) if call.tier else None
    return Route(
        region=chosen,
        fallbacks=tuple(order[1 : 1 + policy.max_fallbacks]),
        tier=tier,
        call=call,
        residency_zone=zone,
        reason=reason,
        scores=tuple(by_score),
        panic=panic,
    )


def _residency_zone(country: str, policy: RoutingPolicy) -> str | None:
    """The zone the call must stay in (``""``: none), or ``None`` when a ``caller`` rule finds no zone."""
    if policy.residency == CALLER_RESIDENCY:
        return residency_zone_of(country) or None
    if policy.residency:
        return policy.residency
    if policy.data_residency:
        zone = residency_zone_of(country)
        # Only callers from the listed zones are kept in theirs; this rule routes the rest freely.
        return zone if zone in policy.residency_zones else ""
    return ""


def _score_row(
    region: Region,
    view: RegionHealth | None,
    call: CallInfo,
    country: str,
    continent: str,
    zone: str,
    edge: str,
    rank: int | None,
    catalog: Catalog,
    policy: RoutingPolicy,
) -> ScoreRow:
    """Score one region for one caller and say why it may not be used (``note``)."""
    if view is not None and view.latency_ms is not None:
        latency, source = view.latency_ms, "measured"
    else:
        prior = catalog.prior_rtt_ms(edge, region.name)
        if prior is not None:
            latency, source = prior, "prior"
        else:
            latency, source = policy.unknown_latency_ms, "default"
    state = view.state if view is not None else HealthState.HEALTHY
    breaker = view.breaker if view is not None else BreakerState.CLOSED
    base = max(0.0, policy.latency_budget_ms - latency)
    country_bonus = policy.country_bonus if country and region.country == country else 0.0
    continent_bonus = policy.continent_bonus if continent and region.continent == continent else 0.0
    primary_bonus = policy.primary_bonus if region.primary else 0.0
    tier_bonus = policy.tier_bonus if call.tier and call.tier in region.tiers else 0.0
    penalty = policy.degraded_penalty if state is HealthState.DEGRADED else 0.0
    if view is not None:
        penalty += policy.load_penalty * min(1.0, view.active_calls / region.capacity)
        penalty += policy.throttle_penalty * (1.0 - view.throttle_weight)

    note = ""
    if zone and region.zone != zone:
        note = f"outside {zone} residency"
    elif policy.require_tier and call.tier and call.tier not in region.tiers:
        note = f"no {call.tier} tier"
    elif state is HealthState.UNHEALTHY:
        note = "unhealthy"
    elif breaker is BreakerState.OPEN:
        note = "breaker open"
    elif state is HealthState.DEGRADED and latency >= policy.degraded_max_latency_ms:
        note = f"degraded at {latency:.0f} ms"
    elif view is not None and view.active_calls >= region.capacity:
        note = "at capacity"
    return ScoreRow(
        region=region.name,
        zone=region.zone,
        state=str(state) if view is not None else "unknown",
        breaker=str(breaker),
        latency_ms=latency,
        latency_source=source,
        base=base,
        country_bonus=country_bonus,
        continent_bonus=continent_bonus,
        primary_bonus=primary_bonus,
        tier_bonus=tier_bonus,
        penalty=penalty,
        total=base + country_bonus + continent_bonus + primary_bonus + tier_bonus - penalty,
        preference_rank=rank,
        eligible=not note,
        note=note,
    )


def keep_sticky(
    previous: Route | None, fresh: Route, streak: int, policy: RoutingPolicy | None = None
) -> tuple[Route, int]:
    """Hysteresis between turns: stay in the call's region unless it became ineligible,
    or the fresh route named another region for ``switch_after_turns`` turns in a row.

    Returns the route to use and the new streak count (pass it back next turn).
    """
    policy = policy or RoutingPolicy()
    if previous is None or fresh.region == previous.region or previous.region not in fresh.regions:
        return fresh, 0
    streak += 1
    if streak >= policy.switch_after_turns:
        return fresh, 0
    others = tuple(name for name in fresh.regions if name != previous.region)
    kept = Route(
        region=previous.region,
        fallbacks=others[: policy.max_fallbacks],
        tier=previous.tier,
        call=fresh.call,
        residency_zone=fresh.residency_zone,
        reason=f"staying in {previous.region} (route prefers {fresh.region}, {streak}/"
        f"{policy.switch_after_turns} turns)",
        scores=fresh.scores,
        panic=fresh.panic,
    )
    return kept, streak


class CallRouting:
    """One call's routing state: re-routes every turn, keeping the region with :func:`keep_sticky`."""

    def __init__(self, call: CallInfo, catalog: Catalog, policy: RoutingPolicy | None = None) -> None:
        self.call = call
        self.catalog = catalog
        self.policy = policy or RoutingPolicy()
        self.current: Route | None = None
        self._streak = 0

    def next_turn(self, health: HealthSnapshot) -> Route:
        """The route for the call's next turn; raises :class:`NoEligibleRegion`."""
        fresh = route(self.call, health, self.catalog, self.policy)
        self.current, self._streak = keep_sticky(self.current, fresh, self._streak, self.policy)
        return self.current


def _fit_tier(wanted: str | None, offered: Sequence[str]) -> str | None:
    """The wanted tier if offered, else the next cheaper one, else the next dearer one."""
    if wanted is None or wanted not in KNOWN_TIERS:
        return wanted if wanted in offered else None
    index = KNOWN_TIERS.index(wanted)
    for tier in (*KNOWN_TIERS[index:], *reversed(KNOWN_TIERS[:index])):
        if tier in offered:
            return tier
    return None


def format_score_table(scores: Sequence[ScoreRow], chosen: str = "", fallbacks: Sequence[str] = ()) -> str:
    """The score table as aligned plain text: the chosen region, its fallbacks, then the rest."""
    header = (
        "region",
        "zone",
        "health",
        "latency",
        "base",
        "country",
        "contin.",
        "primary",
        "tier",
        "penalty",
        "total",
        "pref",
        "",
    )
    lines: list[tuple[str, ...]] = [header]
    order = [chosen, *fallbacks]
    ranked = sorted(scores, key=lambda row: order.index(row.region) if row.region in order else len(order))
    for row in ranked:
        if row.region == chosen:
            mark = "<- chosen"
        elif row.region in fallbacks:
            mark = f"fallback {list(fallbacks).index(row.region) + 1}"
        else:
            mark = row.note or "-"
        health = row.state if row.breaker == "closed" else f"{row.state}/{row.breaker}"
        lines.append(
            (
                row.region,
                row.zone,
                health,
                f"{row.latency_ms:.0f} ms {row.latency_source}",
                f"{row.base:.0f}",
                _signed(row.country_bonus),
                _signed(row.continent_bonus),
                _signed(row.primary_bonus),
                _signed(row.tier_bonus),
                _signed(-row.penalty),
                f"{row.total:.0f}",
                str(row.preference_rank or "-"),
                mark,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = {4, 5, 6, 7, 8, 9, 10}
    out = []
    for line in lines:
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(line)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def format_route_table(route: Route) -> str:
    """What ``aybiza route --from <number>`` prints: who is calling, the scores and the choice."""
    call = route.call
    who = call.caller or "caller"
    country = call.caller_country or "unknown country"
    continent = continent_of(call.caller_country) or "?"
    head = f"Route for {who} ({country}{', ' + call.area if call.area else ''}, continent {continent}"
    head += f", residency {route.residency_zone})" if route.residency_zone else ", no residency rule)"
    lines = [head, "", format_score_table(route.scores, route.region, route.fallbacks), ""]
    lines.append(f"choice:    {route.region} ({route.reason})")
    lines.append(f"fallbacks: {', '.join(route.fallbacks) if route.fallbacks else 'none'}")
    if call.tier:
        lines.append(f"tier:      {route.tier or 'none available'} (wanted {call.tier})")
    return "\n".join(lines)


def _signed(value: float) -> str:
    return "0" if value == 0 else f"{value:+.0f}"
