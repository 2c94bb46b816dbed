"""Health state machines under a virtual clock: hysteresis, peak-EWMA, breaker, shared views."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aybiza.routing.health import (
    BreakerState,
    CircuitBreaker,
    FailureKind,
    HealthConfig,
    HealthRegistry,
    HealthSnapshot,
    HealthState,
    PeakEwma,
    RegionHealth,
    RegionTracker,
    merge_shared,
)


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def health_state(tracker: RegionTracker) -> HealthState:
    return tracker.state


def breaker_state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state


NO_JITTER = HealthConfig(ejection_jitter=0.0)


def make_registry(
    clock: FakeClock, config: HealthConfig = NO_JITTER, baselines: dict[str, float] | None = None
) -> HealthRegistry:
    return HealthRegistry(["r1", "r2"], config, clock=clock, rng=random.Random(7), baselines_ms=baselines)


# -- peak-EWMA ---------------------------------------------------------------------------------


def test_peak_ewma_jumps_to_peaks_and_decays_with_tau() -> None:
    ewma = PeakEwma(tau_s=10.0)
    assert ewma.value is None
    assert ewma.observe(100.0, now=0.0) == 100.0
    # 10 s later (one tau) a 50 ms sample gets weight 1 - e^-1
    assert ewma.observe(50.0, now=10.0) == pytest.approx(100 * math.exp(-1) + 50 * (1 - math.exp(-1)))
    assert ewma.observe(400.0, now=10.5) == 400.0  # a spike is taken at once
    # two samples at the same instant: the lower one cannot pull a fresh peak down
    assert ewma.observe(10.0, now=10.5) == 400.0


@given(st.lists(st.tuples(st.floats(0.1, 5000), st.floats(0, 60)), min_size=1, max_size=50))
def test_peak_ewma_stays_between_the_smallest_and_largest_sample(samples: list[tuple[float, float]]) -> None:
    ewma = PeakEwma(tau_s=10.0)
    now = 0.0
    for value, gap in samples:
        now += gap
        ewma.observe(value, now)
    low = min(v for v, _ in samples)
    high = max(v for v, _ in samples)
    assert ewma.value is not None
    assert low - 1e-6 <= ewma.value <= high + 1e-6


# -- hysteresis ----------------------------------------------------------------------------------


def test_probe_hysteresis_two_failures_down_three_passes_up(clock: FakeClock) -> None:
    registry = make_registry(clock)
    timeline = []
    for ok in [False, False, True, False, True, True, True]:
        registry.record_probe("r1", ok, 0.01 if ok else None)
        clock.advance(1)
        timeline.append(registry.tracker("r1").state)
    H, U = HealthState.HEALTHY, HealthState.UNHEALTHY
    assert timeline == [H, U, U, U, U, U, H]


@given(st.lists(st.booleans(), max_size=60))
def test_isolated_probe_failures_never_take_a_region_down(results: list[bool]) -> None:
    clock = FakeClock()
    registry = make_registry(clock)
    previous_ok = True
    for ok in results:
        if not ok and not previous_ok:
            ok = True  # keep failures isolated: never two in a row
        registry.record_probe("r1", ok, 0.01 if ok else None)
        clock.advance(2)
        previous_ok = ok
        assert registry.tracker("r1").state is not HealthState.UNHEALTHY


def test_latency_spike_degrades_and_recovery_needs_the_lower_band(clock: FakeClock) -> None:
    registry = make_registry(clock, baselines={"r1": 78.0})
    tracker = registry.tracker("r1")
    registry.record_probe("r1", True, 0.080)
    assert health_state(tracker) is HealthState.HEALTHY
    clock.advance(2)
    registry.record_probe("r1", True, 0.200)  # above max(2 x 78, 78 + 50) = 156 ms
    assert health_state(tracker) is HealthState.DEGRADED
    states = []
    for _ in range(6):
        clock.advance(2)
        registry.record_probe("r1", True, 0.080)
        states.append(tracker.state)
    # estimate = 80 + 120 e^(-0.2 n): 124 ms after 5 samples (above the 117 ms band), 116 after 6
    assert states == [HealthState.DEGRADED] * 5 + [HealthState.HEALTHY]


def test_error_rate_degrades_with_enough_samples(clock: FakeClock) -> None:
    registry = make_registry(clock)
    tracker = registry.tracker("r1")
    for _ in range(19):
        registry.record_success("r1", 0.3)
    registry.record_failure("r1", FailureKind.ERROR)  # 1 of 20 = 5 %
    assert health_state(tracker) is HealthState.DEGRADED
    assert breaker_state(tracker.breaker) is BreakerState.CLOSED
    clock.advance(31)  # the window empties: too few samples to call it degraded
    registry.record_success("r1", 0.3)
    assert health_state(tracker) is HealthState.HEALTHY


# -- circuit breaker ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [FailureKind.CONNECT, FailureKind.FIRST_TOKEN, FailureKind.STALL])
def test_one_hard_failure_opens_the_breaker(clock: FakeClock, kind: FailureKind) -> None:
    registry = make_registry(clock)
    registry.record_failure("r1", kind)
    breaker = registry.tracker("r1").breaker
    assert breaker_state(breaker) is BreakerState.OPEN
    assert breaker.open_until == clock.now + 30
    assert not registry.allow_request("r1")
    assert registry.allow_request("r2")


def test_soft_failures_open_after_three_in_a_row(clock: FakeClock) -> None:
    registry = make_registry(clock)
    breaker = registry.tracker("r1").breaker
    for outcome in ["fail", "fail", "ok", "fail", "fail"]:
        if outcome == "ok":
            registry.record_success("r1", 0.2)
        else:
            registry.record_failure("r1", FailureKind.ERROR)
    assert breaker_state(breaker) is BreakerState.CLOSED
    registry.record_failure("r1", FailureKind.ERROR)
    assert breaker_state(breaker) is BreakerState.OPEN


def test_failure_rate_opens_with_enough_calls(clock: FakeClock) -> None:
    registry = make_registry(clock)
    breaker = registry.tracker("r1").breaker
    for i in range(9):
        if i % 2:
            registry.record_failure("r1", FailureKind.ERROR)
        else:
            registry.record_success("r1", 0.2)
    assert breaker_state(breaker) is BreakerState.CLOSED  # 4 of 9: too few calls and under 50 %
    registry.record_failure("r1", FailureKind.ERROR)  # 5 of 10 = 50 %
    assert breaker_state(breaker) is BreakerState.OPEN


def test_half_open_admits_one_trial_and_closes_after_three_successes(clock: FakeClock) -> None:
    registry = make_registry(clock)
    breaker = registry.tracker("r1").breaker
    registry.record_failure("r1", FailureKind.STALL)
    clock.advance(29.9)
    assert not registry.allow_request("r1")
    clock.advance(0.1)
    assert breaker_state(breaker) is BreakerState.HALF_OPEN
    assert registry.allow_request("r1")
    assert not registry.allow_request("r1")  # one trial at a time
    for _ in range(2):
        registry.record_success("r1", 0.2)
        assert breaker_state(breaker) is BreakerState.HALF_OPEN
        assert registry.allow_request("r1")
    registry.record_success("r1", 0.2)
    assert breaker_state(breaker) is BreakerState.CLOSED


def test_ejection_grows_with_each_reopening_and_is_capped(clock: FakeClock) -> None:
    registry = make_registry(clock)
    breaker = registry.tracker("r1").breaker
    durations = []
    for _ in range(12):
        start = clock.now
        registry.record_failure("r1", FailureKind.CONNECT)
        assert breaker.open_until is not None
        durations.append(breaker.open_until - start)
        clock.advance(durations[-1])
        assert breaker_state(breaker) is BreakerState.HALF_OPEN
        assert registry.allow_request("r1")  # the trial fails and reopens
    assert durations[:4] == [30, 60, 90, 120]
    assert durations[-1] == 300


def test_ejection_multiplier_decays_during_quiet_periods(clock: FakeClock) -> None:
    registry = make_registry(clock)
    breaker = registry.tracker("r1").breaker
    registry.record_failure("r1", FailureKind.CONNECT)
    clock.advance(30)
    registry.record_failure("r1", FailureKind.CONNECT)  # trial failed: 60 s
    clock.advance(60)
    for _ in range(3):
        registry.record_success("r1", 0.2)
    assert breaker_state(breaker) is BreakerState.CLOSED
    clock.advance(65)  # two quiet periods of 30 s: multiplier 2 -> 0
    registry.record_failure("r1", FailureKind.CONNECT)
    assert breaker.open_until == clock.now + 30


def test_probe_passes_end_an_open_period_early_and_count_toward_closing(clock: FakeClock) -> None:
    registry = make_registry(clock)
    breaker = registry.tracker("r1").breaker
    registry.record_failure("r1", FailureKind.STALL)
    registry.record_probe("r1", True, 0.01)
    assert breaker_state(breaker) is BreakerState.OPEN
    registry.record_probe("r1", True, 0.01)
    assert breaker_state(breaker) is BreakerState.HALF_OPEN
    registry.record_probe("r1", False)
    assert breaker_state(breaker) is BreakerState.OPEN  # a failing probe in half-open reopens
    for _ in range(2 + 3):
        clock.advance(1)
        registry.record_probe("r1", True, 0.01)
    assert breaker_state(breaker) is BreakerState.CLOSED


def test_throttling_lowers_the_weight_but_never_opens_the_breaker(clock: FakeClock) -> None:
    registry = make_registry(clock)
    for _ in range(5):
        registry.record_failure("r1", FailureKind.THROTTLED)
    view = registry.snapshot().get("r1")
    assert view is not None
    assert view.breaker is BreakerState.CLOSED
    assert view.throttle_weight == pytest.approx(0.7**5)
    registry.record_success("r1", 0.2)
    assert registry.tracker("r1").throttle_weight == pytest.approx(0.7**5 + 0.05)


def test_snapshot_round_trips_through_json_form(clock: FakeClock) -> None:
    registry = make_registry(clock)
    registry.record_probe("r1", True, 0.05)
    registry.record_failure("r2", FailureKind.STALL)
    registry.call_started("r1")
    snapshot = registry.snapshot()
    r1 = snapshot.get("r1")
    assert r1 is not None and r1.latency_ms == pytest.approx(50.0) and r1.active_calls == 1
    restored = HealthSnapshot.from_dict(snapshot.to_dict())
    assert restored == HealthSnapshot.of(*snapshot.regions.values(), taken_at=snapshot.taken_at)
    assert restored.get("r2") == RegionHealth.from_dict(snapshot.regions["r2"].to_dict())
    registry.call_ended("r1")
    registry.call_ended("r1")
    assert registry.tracker("r1").active_calls == 0


def test_shared_views_demote_but_never_exclude() -> None:
    local = HealthSnapshot.of(RegionHealth("r1", latency_ms=20.0), RegionHealth("r2", HealthState.UNHEALTHY))
    shared = [
        RegionHealth("r1", breaker=BreakerState.OPEN),
        RegionHealth("r2"),
        RegionHealth("r3", HealthState.DEGRADED, latency_ms=90.0),
    ]
    merged = merge_shared(local, shared)
    assert merged.regions["r1"] == RegionHealth("r1", HealthState.DEGRADED, latency_ms=20.0)
    assert merged.regions["r2"].state is HealthState.UNHEALTHY  # local knowledge is kept
    assert merged.regions["r3"] == shared[2]  # unknown locally: taken as is
