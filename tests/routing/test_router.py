"""Route choice over tables of callers x health x policy, including the design's own examples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aybiza.errors import CallError, ConfigError
from aybiza.routing.countries import residency_zone_of
from aybiza.routing.health import BreakerState, HealthSnapshot, HealthState, RegionHealth
from aybiza.routing.regions import Catalog, default_catalog
from aybiza.routing.router import (
    CallInfo,
    CallRouting,
    NoEligibleRegion,
    ResidencyRefused,
    RoutingPolicy,
    format_route_table,
    format_score_table,
    keep_sticky,
    parse_residency,
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
BR = "+5511912345678"
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
            slow = view.state is HealthState.DEGRADED and (view.latency_ms or 0) >= 500
            assert not slow or "slow" in result.reason  # slow regions only when nothing better may take it
    assert len(set(result.regions)) == len(result.regions)


def test_call_routing_keeps_the_call_in_place_across_turns() -> None:
    routing = CallRouting(CallInfo.from_number(UK), CATALOG, EU_ONLY)
    regions = [
        routing.next_turn(state).region
        for state in [snapshot(), snapshot(eu_west_2="open"), snapshot(), snapshot(), snapshot()]
    ]
    assert regions == ["eu-west-2", "eu-central-1", "eu-central-1", "eu-central-1", "eu-west-2"]


# -- agent residency: EU, US, APAC whatever the caller's country; or the caller's own zone -------


def residency(rule: str) -> RoutingPolicy:
    return RoutingPolicy(residency=rule)


@pytest.mark.parametrize(
    ("number", "rule", "region", "fallbacks"),
    [
        # a fixed zone holds whatever the caller's country
        (UK, "US", "us-east-1", ("us-west-2",)),
        (SG, "US", "us-east-1", ("us-west-2",)),  # us-west-2 is 58 ms nearer, the primary bonus is 100
        (US, "EU", "eu-west-2", ("eu-central-1",)),
        (AU, "EU", "eu-west-2", ("eu-central-1",)),  # likewise: 14 ms further, +100 primary
        (UK, "APAC", "ap-southeast-1", ()),
        (US, "APAC", "ap-southeast-1", ()),
        (DE, "EU", "eu-central-1", ("eu-west-2",)),
        # "caller": the caller's own zone
        (UK, "caller", "eu-west-2", ("eu-central-1",)),
        (US, "caller", "us-east-1", ("us-west-2",)),
        (US_WEST, "caller", "us-west-2", ("us-east-1",)),
        (SG, "caller", "ap-southeast-1", ()),
        (AU, "caller", "ap-southeast-1", ()),
    ],
)
def test_agent_residency_keeps_the_call_in_its_zone(
    number: str, rule: str, region: str, fallbacks: tuple[str, ...]
) -> None:
    result = route(CallInfo.from_number(number), snapshot(), CATALOG, residency(rule))
    assert (result.region, result.fallbacks) == (region, fallbacks)
    zone = result.residency_zone
    assert zone == (rule if rule != "caller" else CATALOG.region(region).zone)
    assert result.reason.endswith(f"; {zone} residency")
    for row in result.scores:
        assert row.eligible == (row.zone == zone)
        assert row.eligible or row.note == f"outside {zone} residency"


def test_a_caller_outside_the_zone_is_told_why_no_preferred_region_was_used() -> None:
    result = route(CallInfo.from_number(UK), snapshot(), CATALOG, residency("US"))
    assert result.reason == "best score (no preferred region is in US); US residency"
    assert format_route_table(result).splitlines()[0] == "Route for +447700900123 (GB, continent EU, residency US)"


@pytest.mark.parametrize(
    ("number", "rule", "health", "zone"),
    [
        (UK, "US", {"us_east_1": "unhealthy", "us_west_2": "open"}, "US"),
        (US, "US", {"us_east_1": "unhealthy", "us_west_2": "unhealthy"}, "US"),
        (US, "EU", {"eu_west_2": "unhealthy", "eu_central_1": "open"}, "EU"),
        (SG, "APAC", {"ap_southeast_1": "unhealthy"}, "APAC"),
        (UK, "APAC", {"ap_southeast_1": "open"}, "APAC"),
        (SG, "caller", {"ap_southeast_1": "unhealthy"}, "APAC"),
        (DE, "caller", {"eu_west_2": "unhealthy", "eu_central_1": "unhealthy"}, "EU"),
    ],
)
def test_a_zone_with_no_eligible_region_refuses_the_call(
    number: str, rule: str, health: dict[str, str], zone: str
) -> None:
    with pytest.raises(ResidencyRefused) as caught:
        route(CallInfo.from_number(number), snapshot(**health), CATALOG, residency(rule))
    error = caught.value
    assert isinstance(error, NoEligibleRegion) and isinstance(error, CallError)
    assert error.residency_zone == zone
    assert f"inside {zone} residency" in str(error) and number in str(error)
    assert not any(row.eligible for row in error.scores)


def test_a_refusal_is_never_turned_into_a_move_by_panic_routing() -> None:
    down = snapshot(**{name.replace("-", "_"): "unhealthy" for name in CATALOG.names})
    policy = RoutingPolicy(residency="APAC", allow_panic=True)
    result = route(CallInfo.from_number(UK), down, CATALOG, policy)
    assert result.panic and result.regions == ("ap-southeast-1",)


@pytest.mark.parametrize("number", [BR, UNKNOWN, "+861012345678"])
def test_caller_residency_refuses_a_caller_whose_country_has_no_zone(number: str) -> None:
    with pytest.raises(ResidencyRefused, match="is in no residency zone") as caught:
        route(CallInfo.from_number(number), snapshot(), CATALOG, residency("caller"))
    assert number in str(caught.value)
    assert caught.value.residency_zone == ""
    assert {row.note for row in caught.value.scores} == {"caller has no residency zone"}


def test_a_zone_the_catalog_has_no_region_in_refuses_the_call() -> None:
    no_apac = Catalog(tuple(region for region in CATALOG.regions if region.zone != "APAC"))
    with pytest.raises(ResidencyRefused, match="inside APAC residency"):
        route(CallInfo.from_number(SG), HealthSnapshot(), no_apac, residency("caller"))


def test_the_apac_zone_fits_the_tier_it_offers() -> None:
    result = route(CallInfo.from_number(UK, tier="premium"), snapshot(), CATALOG, residency("APAC"))
    assert (result.region, result.tier) == ("ap-southeast-1", "economy")


@pytest.mark.parametrize(
    ("value", "parsed"),
    [(None, None), ("", None), ("  ", None), ("EU", "EU"), ("us", "US"), (" Apac ", "APAC"), ("Caller", "caller")],
)
def test_residency_settings_are_normalised(value: str | None, parsed: str | None) -> None:
    assert parse_residency(value) == parsed
    assert RoutingPolicy(residency=value).residency == parsed


@pytest.mark.parametrize("value", ["LATAM", "UK", "eu-west-2", "true"])
def test_an_unknown_residency_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="use US, EU, APAC or caller"):
        RoutingPolicy(residency=value)


@given(
    number=st.sampled_from(COUNTRY_NUMBERS + [BR, "+8613912345678", "+971501234567"]),
    rule=st.sampled_from(["EU", "US", "APAC", "caller"]),
    states=st.lists(
        st.sampled_from(["healthy", "degraded", "unhealthy", "open"]),
        min_size=len(CATALOG.names),
        max_size=len(CATALOG.names),
    ),
    panic=st.booleans(),
)
def test_properties_agent_residency_never_leaves_the_zone(
    number: str, rule: str, states: list[str], panic: bool
) -> None:
    views = [
        RegionHealth(name, HealthState.HEALTHY if state == "open" else HealthState(state),
                     BreakerState.OPEN if state == "open" else BreakerState.CLOSED, latency_ms=100.0)
        for name, state in zip(CATALOG.names, states, strict=True)
    ]
    call = CallInfo.from_number(number)
    policy = RoutingPolicy(residency=rule, allow_panic=panic, max_fallbacks=10)
    try:
        result = route(call, HealthSnapshot.of(*views), CATALOG, policy)
    except ResidencyRefused:
        return
    zone = rule if rule != "caller" else residency_zone_of(call.caller_country)
    assert zone and result.residency_zone == zone
    assert all(CATALOG.region(name).zone == zone for name in result.regions)


def test_a_slow_region_is_left_out_while_a_faster_one_may_take_the_call() -> None:
    chosen = route(CallInfo.from_number(UK), snapshot(eu_west_2="degraded:600"), CATALOG, EU_ONLY)
    assert chosen.regions == ("eu-central-1",) and "slow" not in chosen.reason


def test_when_every_region_in_reach_is_slow_the_best_of_them_still_answers() -> None:
    slow = HealthSnapshot.of(*(
        RegionHealth(name, state=HealthState.DEGRADED, latency_ms=540.0 + index)
        for index, name in enumerate(CATALOG.names)
    ))
    chosen = route(CallInfo.from_number(UK), slow, CATALOG, EU_ONLY)
    assert chosen.region in ("eu-west-2", "eu-central-1") and "slow" in chosen.reason
    assert set(chosen.regions) <= {"eu-west-2", "eu-central-1"}  # slow is no reason to leave the zone
