"""A run's records and the figures ROUTING.md section 5.4 defines, as pure functions over them.

*Failover time* is, per call that was mid-turn in the faulted region when the
fault took effect, the time from the fault to the first chunk from another
region; *failed turns* are turns whose caller-visible outcome was an error or
a wrong answer.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TurnResult", "FaultEvent", "RunResult", "FaultStep", "summarise", "percentile"]


@dataclass(slots=True)
class TurnResult:
    """One caller-visible turn: when it started, who answered, what was heard."""

    call: int
    caller: str
    started_at: float
    ended_at: float
    ok: bool
    region: str
    answered_by: str | None
    first_token_at: float | None
    attempts: list[tuple[str, str, float, float | None, float | None]]
    error: str = ""

    @property
    def regions_tried(self) -> list[str]:
        """Regions a request went to, in order."""
        return [region for region, outcome, *_ in self.attempts if outcome != "skipped"]


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """A fault that was in effect from ``at`` (monotonic seconds) until ``until``."""

    kind: str
    region: str
    at: float
    until: float | None = None


@dataclass(slots=True)
class RunResult:
    """Every turn of a run and the faults injected during it."""

    turns: list[TurnResult] = field(default_factory=list)
    faults: list[FaultEvent] = field(default_factory=list)
    started_at: float = 0.0
    ended_at: float = 0.0
    clients: dict[str, int] = field(default_factory=dict)
    """Region -> how many boto3 clients its turns used (one: shared by every call and turn)."""


FaultStep = tuple[float, str, str, str]
"""``(seconds after start, "inject" | "restore", region, kind)``."""



def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``values``, or None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def summarise(result: RunResult, allowed_zone_regions: Sequence[str] | None = None) -> dict[str, Any]:
    """Figures for a run: failed turns, failover time per fault kind, latency of normal turns.

    *Failover time* is measured, per call that was mid-turn in the faulted region
    when the fault took effect, from the fault to the first chunk from another
    region. ``allowed_zone_regions`` (if given) counts answers from elsewhere as
    residency violations.
    """
    turns = result.turns
    failed = [t for t in turns if not t.ok]
    by_kind: dict[str, list[float]] = {}
    mid_turn: dict[str, int] = {}
    late_hits: dict[str, int] = {}
    for fault in result.faults:
        times = by_kind.setdefault(fault.kind, [])
        until = fault.until if fault.until is not None else result.ended_at
        late_hits[fault.kind] = late_hits.get(fault.kind, 0) + sum(
            1
            for turn in turns
            for a in turn.attempts
            if a[0] == fault.region and a[1] not in ("skipped", "ok") and fault.at < a[2] < until
        )
        for turn in turns:
            hit = [
                a
                for a in turn.attempts
                if a[0] == fault.region
                and a[1] not in ("skipped", "ok")
                and a[2] <= fault.at
                and (a[4] is None or a[4] >= fault.at)
            ]
            if not hit:
                continue
            mid_turn[fault.kind] = mid_turn.get(fault.kind, 0) + 1
            rescue = [a for a in turn.attempts if a[0] != fault.region and a[3] is not None and a[3] >= fault.at]
            if rescue:
                times.append(min(a[3] for a in rescue if a[3] is not None) - fault.at)
    ttfts = [
        t.first_token_at - t.started_at
        for t in turns
        if t.ok and t.first_token_at is not None and len(t.regions_tried) == 1
    ]
    violations = 0
    if allowed_zone_regions is not None:
        violations = sum(1 for t in turns for r in t.regions_tried if r not in allowed_zone_regions)
    kinds: dict[str, Any] = {}
    for kind, times in by_kind.items():
        kinds[kind] = {
            "faults": sum(1 for f in result.faults if f.kind == kind),
            "calls_mid_turn": mid_turn.get(kind, 0),
            "requests_to_faulted_region_after_fault": late_hits.get(kind, 0),
            "failovers_measured": len(times),
            "failover_ms_p50": _ms(percentile(times, 0.5)),
            "failover_ms_p95": _ms(percentile(times, 0.95)),
            "failover_ms_max": _ms(max(times) if times else None),
        }
    return {
        "turns": len(turns),
        "failed_turns": len(failed),
        "failed_examples": [t.error for t in failed[:5]],
        "turns_retried": sum(1 for t in turns if len(t.regions_tried) > 1),
        "answered_by": dict(Counter(t.answered_by or "none" for t in turns)),
        "ttft_ms_p50": _ms(percentile(ttfts, 0.5)),
        "ttft_ms_p95": _ms(percentile(ttfts, 0.95)),
        "worst_turn_first_token_ms": _ms(
            max((t.first_token_at - t.started_at for t in turns if t.first_token_at is not None), default=None)
        ),
        "residency_violations": violations,
        "boto3_clients_per_region": dict(result.clients),
        "fault_kinds": kinds,
        "duration_s": round(result.ended_at - result.started_at, 2),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)

