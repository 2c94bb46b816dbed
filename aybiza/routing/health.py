"""Region health: probe verdicts, passive outcomes, hysteresis and a circuit breaker.

Pure state machines driven by an injectable clock, so tests feed recorded
sequences of events under virtual time (the way Envoy and tower test theirs).
The probing I/O that feeds them lives in :mod:`aybiza.routing.probes`.

Per region we keep:

* a **health state** -- ``healthy``/``degraded``/``unhealthy`` -- from probes with
  hysteresis: ``unhealthy_after`` consecutive probe failures take it down,
  ``healthy_after`` consecutive passes bring it back. It is *degraded* while the
  probe latency is above ``degraded_factor`` x the region's baseline, or the error
  rate of real requests is at least ``degraded_error_rate`` over ``window_s`` (with
  ``min_samples``); it recovers below ``recovered_factor`` x and
  ``recovered_error_rate`` (a band, so it does not flap).
* **latency** as a peak-EWMA: a sample above the estimate replaces it at once, a
  lower one blends in with weight ``1 - exp(-dt/tau)``. Probe RTT and the
  time-to-first-token of real requests are tracked separately.
* a **circuit breaker**: closed -> open after one hard failure (refused connection,
  first-token deadline, stream stall), ``breaker_consecutive`` failures in a row,
  or a failure rate >= ``breaker_failure_rate`` with ``breaker_min_calls`` calls in
  the window. Open lasts ``ejection_base_s`` x n (n = times opened, decaying by
  one per ``multiplier_decay_s``), capped at ``ejection_max_s``, +-jitter; then
  half-open lets ``half_open_trials`` requests through at a time and closes after
  ``close_after`` successes in a row (passing probes count, as in Envoy;
  ``uneject_after_probes`` passing probes end the open period early).
* throttling (429/``ThrottlingException``) is a separate signal: it lowers the
  region's admission weight (x0.7, +0.05 per success) and never opens the breaker.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "Clock",
    "HealthState",
    "BreakerState",
    "FailureKind",
    "HARD_FAILURES",
    "HealthConfig",
    "PeakEwma",
    "CircuitBreaker",
    "RegionHealth",
    "HealthSnapshot",
    "merge_shared",
    "RegionTracker",
    "HealthRegistry",
]

Clock = Callable[[], float]
"""Returns monotonic seconds; ``time.monotonic`` in production, a fake in tests."""

_log = logging.getLogger("aybiza.routing.health")


class HealthState(enum.StrEnum):
    """What probes and request outcomes say about a region."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class BreakerState(enum.StrEnum):
    """Circuit breaker state of a region."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class FailureKind(enum.StrEnum):
    """How a real request to a region failed."""

    CONNECT = "connect"
    FIRST_TOKEN = "first_token"
    STALL = "stall"
    ERROR = "error"
    THROTTLED = "throttled"


HARD_FAILURES = frozenset({FailureKind.CONNECT, FailureKind.FIRST_TOKEN, FailureKind.STALL})
"""Failures that open the breaker at once: the region did not answer at all."""


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Thresholds of the health state machine and the breaker (docs/routing.md section 7.1)."""

    unhealthy_after: int = 2
    healthy_after: int = 3
    latency_tau_s: float = 10.0
    degraded_factor: float = 2.0
    recovered_factor: float = 1.5
    degraded_floor_ms: float = 50.0
    degraded_error_rate: float = 0.05
    recovered_error_rate: float = 0.02
    window_s: float = 30.0
    min_samples: int = 20
    breaker_consecutive: int = 3
    breaker_failure_rate: float = 0.5
    breaker_min_calls: int = 10
    ejection_base_s: float = 30.0
    ejection_max_s: float = 300.0
    ejection_jitter: float = 0.1
    multiplier_decay_s: float = 30.0
    half_open_trials: int = 1
    close_after: int = 3
    uneject_after_probes: int = 2
    throttle_backoff: float = 0.7
    throttle_recovery: float = 0.05


class PeakEwma:
    """A latency estimate that jumps to peaks at once and decays with time constant ``tau_s``."""

    __slots__ = ("tau_s", "_value", "_updated_at")

    def __init__(self, tau_s: float, initial: float | None = None, now: float = 0.0) -> None:
        self.tau_s = tau_s
        self._value = initial
        self._updated_at = now

    @property
    def value(self) -> float | None:
        """The current estimate, or ``None`` before the first sample."""
        return self._value

    def observe(self, sample: float, now: float) -> float:
        """Fold in one sample taken at ``now``; returns the new estimate."""
        if self._value is None or sample > self._value:
            self._value = sample
        else:
            elapsed = max(0.0, now - self._updated_at)
            weight = math.exp(-elapsed / self.tau_s)
            self._value = self._value * weight + sample * (1.0 - weight)
        self._updated_at = now
        return self._value


class CircuitBreaker:
    """Closed / open / half-open, with growing ejection times and probe cooperation."""

    def __init__(self, config: HealthConfig, clock: Clock, rng: random.Random) -> None:
        self._config = config
        self._clock = clock
        self._rng = rng
        self._state = BreakerState.CLOSED
        self._open_until = 0.0
        self._multiplier = 0
        self._multiplier_at = clock()
        self._consecutive_failures = 0
        self._half_open_successes = 0
        self._trials_in_flight = 0
        self._probe_passes = 0
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        """The state now (an expired open period turns into half-open on read)."""
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            self._to_half_open()
        return self._state

    @property
    def open_until(self) -> float | None:
        """When the open period ends (clock seconds), or ``None`` if not open."""
        return self._open_until if self.state is BreakerState.OPEN else None

    def allow(self) -> bool:
        """May a request go to the region now? Reserves a trial slot when half-open."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._trials_in_flight < self._config.half_open_trials:
            self._trials_in_flight += 1
            return True
        return False

    def release(self) -> None:
        """Give back a trial slot whose request ended without a verdict (cancelled)."""
        self._trials_in_flight = max(0, self._trials_in_flight - 1)

    def record_success(self) -> None:
        """A real request succeeded."""
        self._consecutive_failures = 0
        if self.state is BreakerState.HALF_OPEN:
            self.release()
            self._count_half_open_success()

    def record_failure(self, hard: bool, window_failure_rate: float, window_calls: int) -> None:
        """A real request failed; ``hard`` failures open the breaker at once."""
        self._consecutive_failures += 1
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self.release()
            self._open()
        elif state is BreakerState.CLOSED and (
            hard
            or self._consecutive_failures >= self._config.breaker_consecutive
            or (
                window_calls >= self._config.breaker_min_calls
                and window_failure_rate >= self._config.breaker_failure_rate
            )
        ):
            self._open()

    def record_probe(self, ok: bool) -> None:
        """An active probe's verdict: passes end an open period early and count toward closing."""
        state = self.state
        if not ok:
            self._probe_passes = 0
            if state is BreakerState.HALF_OPEN:
                self._open()
            return
        self._probe_passes += 1
        if state is BreakerState.OPEN and self._probe_passes >= self._config.uneject_after_probes:
            self._to_half_open()
        elif state is BreakerState.HALF_OPEN:
            self._count_half_open_success()

    def _count_half_open_success(self) -> None:
        self._half_open_successes += 1
        if self._half_open_successes >= self._config.close_after:
            self._state = BreakerState.CLOSED
            self._consecutive_failures = 0
            self._multiplier_at = self._clock()

    def _to_half_open(self) -> None:
        self._state = BreakerState.HALF_OPEN
        self._half_open_successes = 0
        self._trials_in_flight = 0

    def _open(self) -> None:
        config = self._config
        now = self._clock()
        # The multiplier decays by one per quiet period before it grows again (gRFC A50).
        if self._state is BreakerState.CLOSED and config.multiplier_decay_s > 0:
            quiet_periods = int((now - self._multiplier_at) // config.multiplier_decay_s)
            self._multiplier = max(0, self._multiplier - quiet_periods)
        self._multiplier += 1
        duration = min(config.ejection_base_s * self._multiplier, config.ejection_max_s)
        if config.ejection_jitter:
            duration *= 1.0 + self._rng.uniform(-config.ejection_jitter, config.ejection_jitter)
        self._state = BreakerState.OPEN
        self._open_until = now + duration
        self._multiplier_at = now
        self._probe_passes = 0
        self._half_open_successes = 0
        self._trials_in_flight = 0
        self.times_opened += 1


@dataclass(frozen=True, slots=True)
class RegionHealth:
    """One region's health at one moment: plain values the router can decide on."""

    region: str
    state: HealthState = HealthState.HEALTHY
    breaker: BreakerState = BreakerState.CLOSED
    latency_ms: float | None = None
    ttft_ms: float | None = None
    error_rate: float = 0.0
    throttle_weight: float = 1.0
    active_calls: int = 0
    failed_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form (for sharing health views through Redis)."""
        return {
            "region": self.region,
            "state": str(self.state),
            "breaker": str(self.breaker),
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "error_rate": self.error_rate,
            "throttle_weight": self.throttle_weight,
            "active_calls": self.active_calls,
            "failed_at": self.failed_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegionHealth:
        """Inverse of :meth:`to_dict`."""

        def number(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        return cls(
            region=str(data["region"]),
            state=HealthState(data.get("state", "healthy")),
            breaker=BreakerState(data.get("breaker", "closed")),
            latency_ms=number("latency_ms"),
            ttft_ms=number("ttft_ms"),
            error_rate=float(data.get("error_rate", 0.0)),
            throttle_weight=float(data.get("throttle_weight", 1.0)),
            active_calls=int(data.get("active_calls", 0)),
            failed_at=number("failed_at"),
        )


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """Health of every known region at one moment; regions not listed count as unknown."""

    regions: Mapping[str, RegionHealth] = field(default_factory=dict)
    taken_at: float = 0.0

    @classmethod
    def of(cls, *views: RegionHealth, taken_at: float = 0.0) -> HealthSnapshot:
        """Build a snapshot from region views (handy in tests)."""
        return cls(MappingProxyType({view.region: view for view in views}), taken_at)

    def get(self, region: str) -> RegionHealth | None:
        """The view of ``region``, or ``None`` if nothing is known about it."""
        return self.regions.get(region)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form."""
        return {"taken_at": self.taken_at, "regions": [view.to_dict() for view in self.regions.values()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthSnapshot:
        """Inverse of :meth:`to_dict`."""
        views = [RegionHealth.from_dict(item) for item in data.get("regions", [])]
        return cls.of(*views, taken_at=float(data.get("taken_at", 0.0)))


def merge_shared(local: HealthSnapshot, shared: Iterable[RegionHealth]) -> HealthSnapshot:
    """Fold other processes' views (e.g. read from Redis) into this process's snapshot.

    Shared views are advisory: each process measures its own health. A region this
    process sees as healthy but another sees as unhealthy or ejected is demoted to
    *degraded* here (ranked behind healthy regions, still usable); a region this
    process knows nothing about takes the shared view as is.
    """
    merged = dict(local.regions)
    for view in shared:
        mine = merged.get(view.region)
        if mine is None:
            merged[view.region] = view
            continue
        troubled = view.state is HealthState.UNHEALTHY or view.breaker is BreakerState.OPEN
        if troubled and mine.state is HealthState.HEALTHY and mine.breaker is BreakerState.CLOSED:
            merged[view.region] = dataclasses.replace(mine, state=HealthState.DEGRADED)
    return HealthSnapshot(MappingProxyType(merged), local.taken_at)


class RegionTracker:
    """The health state machine of one region."""

    def __init__(
        self,
        region: str,
        config: HealthConfig,
        clock: Clock,
        rng: random.Random,
        baseline_ms: float | None = None,
    ) -> None:
        self.region = region
        self._config = config
        self._clock = clock
        self._baseline_ms = baseline_ms
        self._min_probe_ms: float | None = None
        now = clock()
        self.rtt = PeakEwma(config.latency_tau_s, now=now)
        self.ttft = PeakEwma(config.latency_tau_s, now=now)
        self.breaker = CircuitBreaker(config, clock, rng)
        self.state = HealthState.HEALTHY
        self._probe_failures = 0
        self._probe_passes = 0
        self._outcomes: deque[tuple[float, bool]] = deque()
        self.throttle_weight = 1.0
        self.active_calls = 0
        self.failed_at: float | None = None

    # -- inputs -----------------------------------------------------------------------------

    def record_probe(self, ok: bool, latency_s: float | None = None) -> None:
        """An active probe finished: ``ok`` with its latency, or failed."""
        now = self._clock()
        if ok:
            self._probe_failures = 0
            self._probe_passes += 1
            if latency_s is not None:
                sample_ms = latency_s * 1000.0
                self.rtt.observe(sample_ms, now)
                if self._min_probe_ms is None or sample_ms < self._min_probe_ms:
                    self._min_probe_ms = sample_ms
        else:
            self._probe_passes = 0
            self._probe_failures += 1
            self.failed_at = now
        self.breaker.record_probe(ok)
        self._evaluate(now)

    def record_success(self, ttft_s: float | None = None) -> None:
        """A real request answered (``ttft_s``: its time to first token)."""
        now = self._clock()
        if ttft_s is not None:
            self.ttft.observe(ttft_s * 1000.0, now)
        self._remember(now, True)
        self.throttle_weight = min(1.0, self.throttle_weight + self._config.throttle_recovery)
        self.breaker.record_success()
        self._evaluate(now)

    def record_failure(self, kind: FailureKind) -> None:
        """A real request failed; throttling only lowers the admission weight."""
        now = self._clock()
        if kind is FailureKind.THROTTLED:
            self.throttle_weight *= self._config.throttle_backoff
            self.breaker.release()
            return
        self.failed_at = now
        self._remember(now, False)
        rate, calls = self._window(now)
        self.breaker.record_failure(kind in HARD_FAILURES, rate, calls)
        self._evaluate(now)

    # -- outputs ----------------------------------------------------------------------------

    def view(self) -> RegionHealth:
        """An immutable view for the router."""
        rate, _ = self._window(self._clock())
        return RegionHealth(
            region=self.region,
            state=self.state,
            breaker=self.breaker.state,
            latency_ms=self.rtt.value,
            ttft_ms=self.ttft.value,
            error_rate=rate,
            throttle_weight=self.throttle_weight,
            active_calls=self.active_calls,
            failed_at=self.failed_at,
        )

    # -- internals --------------------------------------------------------------------------

    def _remember(self, now: float, ok: bool) -> None:
        self._outcomes.append((now, ok))

    def _window(self, now: float) -> tuple[float, int]:
        horizon = now - self._config.window_s
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._outcomes.popleft()
        calls = len(self._outcomes)
        if not calls:
            return 0.0, 0
        failures = sum(1 for _, ok in self._outcomes if not ok)
        return failures / calls, calls

    def _thresholds_ms(self) -> tuple[float, float] | None:
        baseline = self._baseline_ms if self._baseline_ms is not None else self._min_probe_ms
        if baseline is None:
            return None
        config = self._config
        degrade = max(config.degraded_factor * baseline, baseline + config.degraded_floor_ms)
        recover = max(config.recovered_factor * baseline, baseline + config.degraded_floor_ms / 2)
        return degrade, recover

    def _evaluate(self, now: float) -> None:
        config = self._config
        old = self.state
        if self.state is HealthState.UNHEALTHY:
            if self._probe_passes >= config.healthy_after:
                self.state = HealthState.HEALTHY
        elif self._probe_failures >= config.unhealthy_after:
            self.state = HealthState.UNHEALTHY
        if self.state is not HealthState.UNHEALTHY:
            rate, calls = self._window(now)
            latency = self.rtt.value
            thresholds = self._thresholds_ms()
            slow = thresholds is not None and latency is not None and latency > thresholds[0]
            fast = thresholds is None or latency is None or latency < thresholds[1]
            erring = calls >= config.min_samples and rate >= config.degraded_error_rate
            clean = calls < config.min_samples or rate < config.recovered_error_rate
            if slow or erring:
                self.state = HealthState.DEGRADED
            elif self.state is HealthState.DEGRADED and fast and clean:
                self.state = HealthState.HEALTHY
        if self.state is not old and _log.isEnabledFor(logging.INFO):
            _log.info("region %s: %s -> %s", self.region, old, self.state)


class HealthRegistry:
    """Trackers for every region, sharing one clock; hands out snapshots."""

    def __init__(
        self,
        regions: Iterable[str],
        config: HealthConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        baselines_ms: Mapping[str, float] | None = None,
    ) -> None:
        self.config = config or HealthConfig()
        self.clock = clock
        shared_rng = rng or random.Random()
        baselines = baselines_ms or {}
        self._trackers = {
            name: RegionTracker(name, self.config, clock, shared_rng, baselines.get(name)) for name in regions
        }

    @property
    def regions(self) -> tuple[str, ...]:
        """Region names tracked."""
        return tuple(self._trackers)

    def tracker(self, region: str) -> RegionTracker:
        """The tracker of ``region`` (``KeyError`` if unknown)."""
        return self._trackers[region]

    def record_probe(self, region: str, ok: bool, latency_s: float | None = None) -> None:
        """See :meth:`RegionTracker.record_probe`."""
        self._trackers[region].record_probe(ok, latency_s)

    def record_success(self, region: str, ttft_s: float | None = None) -> None:
        """See :meth:`RegionTracker.record_success`."""
        self._trackers[region].record_success(ttft_s)

    def record_failure(self, region: str, kind: FailureKind) -> None:
        """See :meth:`RegionTracker.record_failure`."""
        self._trackers[region].record_failure(kind)

    def ttft_ms(self, region: str) -> float | None:
        """The region's time-to-first-token estimate (peak-EWMA of real requests), if any."""
        tracker = self._trackers.get(region)
        return None if tracker is None else tracker.ttft.value

    def allow_request(self, region: str) -> bool:
        """Ask the region's breaker whether a request may go there now."""
        tracker = self._trackers.get(region)
        return tracker is None or tracker.breaker.allow()

    def release(self, region: str) -> None:
        """Return a half-open trial slot for a request that ended without a verdict."""
        tracker = self._trackers.get(region)
        if tracker is not None:
            tracker.breaker.release()

    def call_started(self, region: str) -> None:
        """Count a call placed in ``region`` (for capacity)."""
        if region in self._trackers:
            self._trackers[region].active_calls += 1

    def call_ended(self, region: str) -> None:
        """Uncount a call placed in ``region``."""
        if region in self._trackers:
            tracker = self._trackers[region]
            tracker.active_calls = max(0, tracker.active_calls - 1)

    def snapshot(self) -> HealthSnapshot:
        """Every region's view, now."""
        views = {name: tracker.view() for name, tracker in self._trackers.items()}
        return HealthSnapshot(MappingProxyType(views), self.clock())
