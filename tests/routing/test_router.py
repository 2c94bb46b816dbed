"""Route choice over tables of callers x health x policy, including the design's own examples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aybiza.errors import CallError
from aybiza.routing.health import BreakerState, HealthSnapshot, HealthState, RegionHealth
from aybiza.routing.regions import default_catalog
from aybiza.routing.router import (
    CallInfo,
    CallRouting,
    NoEligibleRegion,
    RoutingPolicy,
    format_route_table,
    format_score_table,
    keep_sticky,
    route,
)

CATALOG = default_catalog()
EU_ONLY = RoutingPolicy(data_residency=True)
OPEN = RoutingPolicy()

UK = "+447700900123"
US = "+12025550123"
US_WEST = "+14155550100"
DE = "+4930901820"
FR = "+33142685300"
SG = "+6561234567"
AU = "+61212345678"
UNKNOWN = "+999123"


def snapshot(**states: str) -> HealthSnapshot:
    """``snapshot(eu_west_2="unhealthy")``: every other region healthy (and measured at its prior)."""
    views = []
    for name in CATALOG.names:
        state = states.get(name.replace("-", "_"), "healthy")
        if state == "open":
            views.append(RegionHealth(name, HealthState.HEALTHY, BreakerState.OPEN))
        elif state.startswith("degraded"):
            latency = float(state.split(":")[1]) if ":" in state else 100.0
            views.append(RegionHealth(name, HealthState.DEGRADED, latency_ms=latency))
        else:
            views.append(RegionHealth(name, HealthState(state)))
    return HealthSnapshot.of(*views)


@pytest.mark.parametrize(
    ("number", "health", "policy", "region", "fallbacks"),
    [
        # the design's examples: a US caller lands in us-east-1, UK in eu-west-2, DE stays in the EU
        (US, {}, OPEN, "us-east-1", ("us-west-2", "eu-west-2", "eu-central-1", "ap-southeast-1")),
        (UK, {}, EU_ONLY, "eu-west-2", ("eu-central-1",)),
        (DE, {}, EU_ONLY, "eu-central-1", ("eu-west-2",)),
        (FR, {}, EU_ONLY, "eu-central-1", ("eu-west-2",)),
        (US_WEST, {}, OPEN, "us-west-2", ("us-east-1", "eu-west-2", "eu-central-1", "ap-southeast-1")),
        (SG, {}, OPEN, "ap-southeast-1", ("eu-west-2", "us-east-1", "eu-central-1", "us-west-2")),
        (AU, {}, OPEN, "ap-southeast-1", ("us-west-2", "us-east-1", "eu-west-2", "eu-central-1")),
        # the first healthy region in preference order wins
        (UK, {"eu_west_2": "unhealthy"}, EU_ONLY, "eu-central-1", ()),
        (UK, {"eu_west_2": "open"}, EU_ONLY, "eu-central-1", ()),
        (US, {"us_east_1": "unhealthy"}, OPEN, "us-west-2", ("eu-west-2", "eu-central-1", "ap-southeast-1")),
        (DE, {"eu_central_1": "unhealthy"}, EU_ONLY, "eu-west-2", ()),
        # without a residency rule a UK caller may leave the EU once both EU regions are down
        (
            UK,
            {"eu_west_2": "unhealthy", "eu_central_1": "unhealthy"},
            OPEN,
            "us-east-1",
            ("us-west-2", "ap-southeast-1"),
        ),
        # degraded is usable under 500 ms, but a healthy preferred region comes first
        (UK, {"eu_west_2": "degraded:120"}, EU_ONLY, "eu-central-1", ("eu-west-2",)),
        (UK, {"eu_west_2": "degraded:120", "eu_central_1": "unhealthy"}, EU_ONLY, "eu-west-2", ()),
        # no preference list: best score (unknown country scores on latency and primary only:
        # eu-west-2 at 78 ms + primary 100 beats us-west-2 at 64 ms)
        (UNKNOWN, {}, OPEN, "us-east-1", ("eu-west-2", "us-west-2", "eu-central-1", "ap-southeast-1")),
    ],
)
def test_route_table(
    number: str, health: dict[str, str], policy: RoutingPolicy, region: str, fallbacks: tuple[str, ...]
) -> None:
    result = route(CallInfo.from_number(number), snapshot(**health), CATALOG, policy)
    assert (result.region, result.fallbacks) == (region, fallbacks)


@pytest.mark.parametrize(
    ("number", "health"),
    [
        (UK, {"eu_west_2": "unhealthy", "eu_central_1": "unhealthy"}),
        (DE, {"eu_west_2": "open", "eu_central_1": "unhealthy"}),
        (UK, {"eu_west_2": "degraded:600", "eu_central_1": "open"}),  # degraded at >= 500 ms is out
    ],
)
def test_residency_never_moves_a_call_out_of_the_eu(number: str, health: dict[str, str]) -> None:
    with pytest.raises(NoEligibleRegion, match="inside EU residency") as caught:
        route(CallInfo.from_number(number), snapshot(**health), CATALOG, EU_ONLY)
    assert isinstance(caught.value, CallError)
    assert caught.value.residency_zone == "EU"
    assert {row.region for row in caught.value.scores} == set(CATALOG.names)
    table = format_score_table(caught.value.scores)
    assert "outside EU residency" in table and len(table.splitlines()) == 1 + len(CATALOG.names)


def test_all_regions_down_is_an_error_unless_panic_is_allowed() -> None:
    down = snapshot(**{name.replace("-", "_"): "unhealthy" for name in CATALOG.names})
    with pytest.raises(NoEligibleRegion, match="no healthy region"):
        route(CallInfo.from_number(US), down, CATALOG, OPEN)
    panic = route(CallInfo.from_number(US), down, CATALOG, RoutingPolicy(allow_panic=True))
    assert panic.panic and "panic" in panic.reason
    assert set(panic.regions) == set(CATALOG.names)


def test_panic_tries_the_least_recently_failed_first() -> None:
    views = [RegionHealth(name, HealthState.UNHEALTHY, failed_at=100.0 + i) for i, name in enumerate(CATALOG.names)]
    result = route(
        CallInfo.from_number(US), HealthSnapshot.of(*views), CATALOG, RoutingPolicy(allow_panic=True, max_fallbacks=10)
    )
    assert result.regions == CATALOG.names


def test_panic_still_respects_residency() -> None:
    down = snapshot(**{name.replace("-", "_"): "unhealthy" for name in CATALOG.names})
    policy = RoutingPolicy(data_residency=True, allow_panic=True)
    result = route(CallInfo.from_number(UK), down, CATALOG, policy)
    assert set(result.regions) == {"eu-west-2", "eu-central-1"}


def test_design_score_terms() -> None:
    result = route(CallInfo.from_number(DE), HealthSnapshot(), CATALOG, EU_ONLY)
    rows = {row.region: row for row in result.scores}
    euc1, euw2, use1 = rows["eu-central-1"], rows["eu-west-2"], rows["us-east-1"]
    assert (euc1.latency_ms, euc1.latency_source) == (5, "prior")  # Frankfurt edge prior
    assert (euc1.base, euc1.country_bonus, euc1.continent_bonus, euc1.primary_bonus) == (995, 200, 150, 0)
    assert euc1.total == 1345
    assert (euw2.base, euw2.country_bonus, euw2.continent_bonus, euw2.primary_bonus) == (982, 0, 150, 100)
    assert euw2.total == 1232
    assert not use1.eligible and use1.note == "outside EU residency"


def test_measured_latency_replaces_the_prior_and_penalties_apply() -> None:
    views = HealthSnapshot.of(
        RegionHealth("us-east-1", latency_ms=40.0, active_calls=250),  # half of capacity 500
        RegionHealth("us-west-2", HealthState.DEGRADED, latency_ms=70.0, throttle_weight=0.5),
    )
    result = route(CallInfo.from_number(US), views, CATALOG, OPEN)
    rows = {row.region: row for row in result.scores}
    assert rows["us-east-1"].latency_source == "measured"
    assert rows["us-east-1"].penalty == pytest.approx(50.0)
    assert rows["us-west-2"].penalty == pytest.approx(100.0 + 150.0)
    assert rows["eu-west-2"].latency_source == "prior"


def test_full_region_is_skipped() -> None:
    views = HealthSnapshot.of(RegionHealth("us-east-1", active_calls=500))
    result = route(CallInfo.from_number(US), views, CATALOG, OPEN)
    assert result.region == "us-west-2"
    assert "us-east-1" not in result.regions


def test_tier_is_fitted_to_the_chosen_region() -> None:
    call = CallInfo.from_number(UK, tier="premium")
    assert route(call, HealthSnapshot(), CATALOG, EU_ONLY).tier == "premium"
    degraded = route(call, snapshot(eu_west_2="unhealthy"), CATALOG, EU_ONLY)
    assert (degraded.region, degraded.tier) == ("eu-central-1", "advanced")
    assert route(CallInfo.from_number(US), HealthSnapshot(), CATALOG, OPEN).tier is None


def test_required_tier_excludes_regions_without_it() -> None:
    policy = RoutingPolicy(data_residency=True, require_tier=True)
    call = CallInfo.from_number(DE, tier="premium")
    result = route(call, HealthSnapshot(), CATALOG, policy)
    assert result.regions == ("eu-west-2",)
    with pytest.raises(NoEligibleRegion):
        route(call, snapshot(eu_west_2="unhealthy"), CATALOG, policy)


def test_sticky_route_stays_until_the_other_region_wins_three_turns() -> None:
    call = CallInfo.from_number(UK)
    during_fault = route(call, snapshot(eu_west_2="unhealthy"), CATALOG, EU_ONLY)
    assert during_fault.region == "eu-central-1"
    current, streak = keep_sticky(None, during_fault, 0)
    regions = []
    for _ in range(4):  # eu-west-2 is back
        fresh = route(call, snapshot(), CATALOG, EU_ONLY)
        current, streak = keep_sticky(current, fresh, streak)
        regions.append(current.region)
    assert regions == ["eu-central-1", "eu-central-1", "eu-west-2", "eu-west-2"]
    assert current.fallbacks == ("eu-central-1",)


def test_sticky_route_leaves_a_region_that_became_ineligible_at_once() -> None:
    call = CallInfo.from_number(UK)
    current = route(call, snapshot(), CATALOG, EU_ONLY)
    fresh = route(call, snapshot(eu_west_2="open"), CATALOG, EU_ONLY)
    kept, streak = keep_sticky(current, fresh, 2)
    assert (kept.region, streak) == ("eu-central-1", 0)


def test_route_table_output_names_the_choice_and_every_score() -> None:
    result = route(CallInfo.from_number(UK, tier="premium"), HealthSnapshot(), CATALOG, EU_ONLY)
    text = format_route_table(result)
    lines = text.splitlines()
    assert lines[0] == "Route for +447700900123 (GB, continent EU, residency EU)"
    table = [line for line in lines if line.split() and line.split()[0] in CATALOG.names]
    assert [line.split()[0] for line in table] == [
        "eu-west-2",
        "eu-central-1",
        "us-east-1",
        "us-west-2",
        "ap-southeast-1",
    ]
    assert table[0].endswith("<- chosen") and "1495" in table[0]
    assert table[1].endswith("fallback 1")
    assert table[2].endswith("outside EU residency")
    choice = "choice:    eu-west-2 (first region in the preference list (eu-west-2, eu-central-1); EU residency)"
    assert choice in lines
    assert "tier:      premium (wanted premium)" in lines


COUNTRY_NUMBERS = [UK, US, US_WEST, DE, FR, SG, AU, UNKNOWN, "+353123456", "+3491234567", "+46812345"]


@given(
    number=st.sampled_from(COUNTRY_NUMBERS),
    states=st.lists(
        st.sampled_from(["healthy", "degraded", "unhealthy", "open"]),
        min_size=len(CATALOG.names),
        max_size=len(CATALOG.names),
    ),
    latencies=st.lists(st.floats(1, 900), min_size=len(CATALOG.names), max_size=len(CATALOG.names)),
    residency=st.booleans(),
    panic=st.booleans(),
)
def test_properties_residency_and_health(
    number: str, states: list[str], latencies: list[float], residency: bool, panic: bool
) -> None:
    views = []
    for name, state, latency in zip(CATALOG.names, states, latencies, strict=True):
        breaker = BreakerState.OPEN if state == "open" else BreakerState.CLOSED
        health = HealthState.HEALTHY if state == "open" else HealthState(state)
        views.append(RegionHealth(name, health, breaker, latency_ms=latency))
    policy = RoutingPolicy(data_residency=residency, allow_panic=panic, max_fallbacks=10)
    call = CallInfo.from_number(number)
    try:
        result = route(call, HealthSnapshot.of(*views), CATALOG, policy)
    except NoEligibleRegion:
        return
    chosen = {view.region: view for view in views}
    for name in result.regions:
        if residency and call.caller_country in ("GB", "DE", "FR", "IE", "ES", "SE"):
            assert CATALOG.region(name).zone == "EU"  # never outside the EU
        if not result.panic:
            view = chosen[name]
            assert view.state is not HealthState.UNHEALTHY and view.breaker is not BreakerState.OPEN
            assert view.state is not HealthState.DEGRADED or (view.latency_ms or 0) < 500
    assert len(set(result.regions)) == len(result.regions)


def test_call_routing_keeps_the_call_in_place_across_turns() -> None:
    routing = CallRouting(CallInfo.from_number(UK), CATALOG, EU_ONLY)
    regions = [
        routing.next_turn(state).region
        for state in [snapshot(), snapshot(eu_west_2="open"), snapshot(), snapshot(), snapshot()]
    ]
    assert regions == ["eu-west-2", "eu-central-1", "eu-central-1", "eu-central-1", "eu-west-2"]
