"""Prometheus metrics of the process, and the numbers the dashboard page shows.

``Metrics`` owns one ``CollectorRegistry`` (never the global one, so tests and
several apps in one process each get their own) with:

- histograms ``aybiza_stt_final_seconds`` (caller speech end -> final
  transcript), ``aybiza_llm_first_token_seconds``,
  ``aybiza_tts_first_byte_seconds``, ``aybiza_voice_to_voice_seconds`` (caller
  speech end -> first agent audio out) and ``aybiza_edge_frame_seconds`` (edge
  preprocessing of one frame, microsecond buckets);
- counters ``aybiza_calls_total{country,region,model}`` (counted when a call
  ends, with the model that answered most of its turns),
  ``aybiza_cache_requests_total{namespace,result}`` (result ``hit``/``miss``),
  ``aybiza_errors_total{kind}`` (a call that ended on a failure, by its end
  reason), ``aybiza_incidents_total{kind}`` (failures a call met: a fallback
  took over, a turn got no answer), ``aybiza_failovers_total{from_region,to_region}``
  and ``aybiza_call_cost_usd_total{region}``; ``aybiza_refused_total{endpoint,reason}`` (requests and
  connections refused or let go before they became calls: rate limited, at capacity, a stream bound to
  another call ...) and ``aybiza_media_dropped_frames_total{transport}`` (inbound media dropped for pace);
  ``aybiza_reaped_calls_total`` (a dead node's live calls this node archived as interrupted);
- gauges ``aybiza_active_calls``, ``aybiza_region_health{region}`` (2 healthy,
  1 degraded, 0 unhealthy) and ``aybiza_region_latency_seconds{region}``; for the
  node, read when scraped: ``aybiza_node_draining`` (1 while it drains),
  ``aybiza_node_capacity`` (its call slots) and ``aybiza_cluster_nodes`` (live nodes
  it saw in Redis at its last heartbeat; 0 without a cluster).

Labels stay bounded: countries outside ISO 3166-1 become ``unknown``; any other
label keeps its first ``max_label_values`` distinct values and folds the rest
into ``other``. No label ever holds a call id.

Calls report into it through their ledgers (:class:`Metrics` is a
:class:`~aybiza.pipeline.ledger.LedgerSink`): every latency sample, cache
lookup, failover and incident reaches the series as it is recorded.

``snapshot()`` gives the dashboard a plain dict: active calls, p50/p95 per
stage from a small reservoir of recent samples, cache hit ratio, Region
health and the cost of calls ended today.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import date
from decimal import Decimal
from enum import Enum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..pipeline.ledger import CacheKind, IncidentKind, Stage

__all__ = [
    "STAGES",
    "LATENCY_BUCKETS",
    "EDGE_FRAME_BUCKETS",
    "REGION_STATES",
    "REFUSALS",
    "CONTENT_TYPE",
    "LabelGuard",
    "country_label",
    "percentile",
    "Metrics",
]

STAGES: dict[str, str] = {
    "stt_final": "stt_final_seconds",
    "llm_first_token": "llm_first_token_seconds",
    "tts_first_byte": "tts_first_byte_seconds",
    "voice_to_voice": "voice_to_voice_seconds",
    "edge_frame": "edge_frame_seconds",
}
"""Timing stage names (as passed to ``CallLedger.time``) -> histogram names."""

LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
EDGE_FRAME_BUCKETS = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
REGION_STATES = {"unhealthy": 0, "degraded": 1, "healthy": 2}
_STATE_NAMES = {code: name for name, code in REGION_STATES.items()}

REFUSALS: tuple[tuple[str, str], ...] = (
    ("http", "header_timeout"), ("http", "connection_cap"),
    ("twiml", "signature"), ("twiml", "too_large"), ("twiml", "bad_request"), ("twiml", "tokens"),
    ("twilio_stream", "waiting_cap"), ("twilio_stream", "no_start"), ("twilio_stream", "binding"),
    ("twilio_stream", "duplicate"), ("twilio_stream", "at_capacity"),
    ("webrtc_offer", "forbidden"), ("webrtc_offer", "rate_limited"), ("webrtc_offer", "bad_offer"),
    ("webrtc_offer", "at_capacity"), ("webrtc_offer", "no_connection"),
    ("api", "unauthorized"), ("host", "not_allowed"),
)  # fmt: skip
"""``aybiza_refused_total`` label pairs, exported at 0 from the start so rates work before the first refusal."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Content type of ``render()``'s body (the classic text format every Prometheus reads)."""

_ISO_3166 = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
    BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
    EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
    HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
    LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
    NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
    TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """.split()
)
_MAX_LABEL_LENGTH = 64


def country_label(code: str) -> str:
    """An ISO 3166-1 alpha-2 code in upper case, or ``unknown``."""
    cleaned = code.strip().upper()
    if cleaned == "UK":  # common non-ISO spelling of GB
        cleaned = "GB"
    return cleaned if cleaned in _ISO_3166 else "unknown"


class LabelGuard:
    """Bounds one label: its first ``limit`` distinct values pass, later ones become ``other``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        cleaned = value.strip()[:_MAX_LABEL_LENGTH] or "unknown"
        if cleaned in self._seen:
            return cleaned
        with self._lock:
            if cleaned in self._seen:
                return cleaned
            if len(self._seen) >= self._limit:
                return "other"
            self._seen.add(cleaned)
            return cleaned


def percentile(samples: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``samples`` by nearest rank, or None without samples."""
    ordered = sorted(samples)
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _state_code(state: object) -> int:
    if isinstance(state, Enum):
        state = state.value if isinstance(state.value, int | str) else state.name
    if isinstance(state, bool):
        raise ValueError(f"region state must be a name or 0/1/2, got {state!r}")
    if isinstance(state, int):
        if state not in _STATE_NAMES:
            raise ValueError(f"region state code must be 0, 1 or 2, got {state}")
        return state
    if isinstance(state, str):
        try:
            return REGION_STATES[state.strip().lower()]
        except KeyError:
            raise ValueError(f"unknown region state {state!r}; use healthy, degraded or unhealthy") from None
    raise ValueError(f"region state must be a name or 0/1/2, got {state!r}")


class Metrics:
    """The process's metrics, with the few methods the server and the pipeline call."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "aybiza",
        reservoir_size: int = 512,
        max_label_values: int = 50,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.namespace = namespace
        self._today = today
        self._lock = threading.Lock()
        reg, ns = self.registry, namespace
        self._histograms: dict[str, Histogram] = {
            stage: Histogram(
                name,
                f"Latency of the {stage.replace('_', ' ')} stage, seconds",
                namespace=ns,
                registry=reg,
                buckets=EDGE_FRAME_BUCKETS if stage == "edge_frame" else LATENCY_BUCKETS,
            )
            for stage, name in STAGES.items()
        }
        self._calls = Counter("calls", "Calls ended, by caller country, region and the model that answered",
                              ["country", "region", "model"], namespace=ns, registry=reg)
        self._incidents = Counter("incidents", "Failures calls met and survived or ended on", ["kind"],
                                  namespace=ns, registry=reg)
        self._cache = Counter(
            "cache_requests", "Edge cache lookups", ["namespace", "result"], namespace=ns, registry=reg
        )
        self._errors = Counter("errors", "Errors by kind", ["kind"], namespace=ns, registry=reg)
        self.webhook_deliveries = Counter("webhook_deliveries", "Post-call webhook attempts by outcome "
                                          "(delivered, retry, failed)", ["outcome"], namespace=ns, registry=reg)
        self._failovers = Counter(
            "failovers", "Mid-call Region changes", ["from_region", "to_region"], namespace=ns, registry=reg
        )
        self._cost = Counter("call_cost_usd", "Priced cost of ended calls, USD", ["region"], namespace=ns, registry=reg)
        self._refused = Counter("refused", "Requests and connections refused before they became calls",
                                ["endpoint", "reason"], namespace=ns, registry=reg)
        self._media_dropped = Counter("media_dropped_frames", "Inbound media messages dropped: faster than real time",
                                      ["transport"], namespace=ns, registry=reg)
        # preemptive replies (issue 16): started before the end of turn, then used or discarded
        self._preemptions = Counter("preemptions", "Preemptive replies, used or discarded (the caller went on)",
                                    ["outcome"], namespace=ns, registry=reg)
        # Known outcomes start at 0: a dashboard shows "none yet", not "no data" (a dead series looks the same).
        for outcome in ("used", "discarded"):
            self._preemptions.labels(outcome)
        for outcome in ("delivered", "retry", "failed"):
            self.webhook_deliveries.labels(outcome)
        self._active = Gauge("active_calls", "Calls in progress", namespace=ns, registry=reg)
        self._reaped = Counter("reaped_calls", "Live calls of dead nodes this node archived as interrupted",
                               namespace=ns, registry=reg)
        self._node_draining = Gauge("node_draining", "1 while this node drains (takes no new calls)", namespace=ns,
                                    registry=reg)
        self._node_capacity = Gauge("node_capacity", "Call slots of this node", namespace=ns, registry=reg)
        self._cluster_nodes = Gauge("cluster_nodes", "Live nodes this node saw in Redis at its last heartbeat "
                                    "(0 without a cluster)", namespace=ns, registry=reg)
        self._region_health = Gauge(
            "region_health", "Region health: 2 healthy, 1 degraded, 0 unhealthy", ["region"],
            namespace=ns, registry=reg,
        )  # fmt: skip
        self._region_latency = Gauge(
            "region_latency_seconds", "Latest latency estimate of the Region, seconds", ["region"],
            namespace=ns, registry=reg,
        )  # fmt: skip
        self._region_label = LabelGuard(max_label_values)
        self._model_label = LabelGuard(max_label_values)
        self._namespace_label = LabelGuard(max_label_values)
        self._kind_label = LabelGuard(max_label_values)
        self._refusal_label = LabelGuard(max_label_values)
        for endpoint, reason in REFUSALS:
            self._refused.labels(self._refusal_label(endpoint), self._refusal_label(reason))
        self._media_dropped.labels(self._refusal_label("twilio"))
        self._reservoirs: dict[str, deque[float]] = {s: deque(maxlen=reservoir_size) for s in STAGES}
        self._stage_counts = dict.fromkeys(STAGES, 0)
        self._active_count = 0
        self._calls_total = 0
        self._cache_counts: dict[str, list[int]] = {}
        self._error_counts: dict[str, int] = {}
        self._incident_counts: dict[str, int] = {}
        self._incident_at: dict[str, float] = {}
        self._clock = time.monotonic
        self._calls_by: dict[str, dict[str, int]] = {"country": {}, "model": {}}
        self._failover_count = 0
        self._regions: dict[str, tuple[int, float | None]] = {}
        self._cost_day = today()
        self._cost_today = Decimal(0)

    # -- what the server and pipeline call ----------------------------------

    def observe_timing(self, stage: str, seconds: float) -> None:
        """Record a latency sample; a call ledger reports through :meth:`timing`. Unknown stages are ignored."""
        histogram = self._histograms.get(stage)
        if histogram is None or not math.isfinite(seconds) or seconds < 0:
            return
        histogram.observe(seconds)
        with self._lock:
            self._reservoirs[stage].append(seconds)
            self._stage_counts[stage] += 1

    # LedgerSink: what every call's ledger reports as it records.

    def timing(self, stage: Stage, seconds: float) -> None:
        """A call's latency sample."""
        self.observe_timing(stage.value, seconds)

    def incident(self, kind: IncidentKind) -> None:
        """A failure a call met."""
        label = self._kind_label(kind.value)
        self._incidents.labels(label).inc()
        with self._lock:
            self._incident_counts[label] = self._incident_counts.get(label, 0) + 1
            self._incident_at[label] = self._clock()

    def since_incident(self, kind: IncidentKind) -> float | None:
        """Seconds since a call last met ``kind`` (None if none has)."""
        at = self._incident_at.get(kind.value)
        return None if at is None else self._clock() - at

    def call_started(self) -> None:
        """Add a call to the active calls."""
        with self._lock:
            self._active_count += 1
            self._active.set(self._active_count)

    def call_ended(self, cost_usd: float | Decimal, *, region: str, country: str = "", model: str = "none",
                   reason: str = "", failed: bool = False) -> None:
        """Count an ended call (country, region, answering model), add its cost, count its failure reason.

        Negative or NaN costs count as 0.
        """
        cost = Decimal(str(cost_usd))
        if not cost.is_finite() or cost < 0:
            cost = Decimal(0)
        country, region, model = country_label(country), self._region_label(region), self._model_label(model)
        self._calls.labels(country, region, model).inc()
        self._cost.labels(region).inc(float(cost))
        if failed:
            self.error(reason or "unknown")
        with self._lock:
            self._active_count = max(0, self._active_count - 1)
            self._active.set(self._active_count)
            self._calls_total += 1
            for label, value in (("country", country), ("model", model)):
                counts = self._calls_by[label]
                counts[value] = counts.get(value, 0) + 1
            self._roll_day()
            self._cost_today += cost

    def cache(self, namespace: str | CacheKind, hit: bool) -> None:
        """Count an edge cache lookup in ``namespace`` (agent config, llm answers ...)."""
        label = self._namespace_label(str(namespace))
        self._cache.labels(label, "hit" if hit else "miss").inc()
        with self._lock:
            counts = self._cache_counts.setdefault(label, [0, 0])
            counts[0 if hit else 1] += 1

    def error(self, kind: str) -> None:
        """Count an error of ``kind`` (e.g. an error class name or a provider error kind)."""
        label = self._kind_label(kind)
        self._errors.labels(label).inc()
        with self._lock:
            self._error_counts[label] = self._error_counts.get(label, 0) + 1

    def refused(self, endpoint: str, reason: str) -> None:
        """Count a request or connection refused (or let go) before it became a call."""
        self._refused.labels(self._refusal_label(endpoint), self._refusal_label(reason)).inc()

    def media_dropped(self, transport: str, frames: int) -> None:
        """Count inbound media messages a call's pace guard dropped."""
        if frames > 0:
            self._media_dropped.labels(self._refusal_label(transport)).inc(frames)

    def preemption(self, outcome: str) -> None:
        """Count a preemptive reply ``used`` or ``discarded``."""
        self._preemptions.labels(outcome).inc()

    def failover(self, from_region: str, to_region: str) -> None:
        """Count a call moving from one Region to another."""
        self._failovers.labels(self._region_label(from_region), self._region_label(to_region)).inc()
        with self._lock:
            self._failover_count += 1

    def node_state(self, draining: Callable[[], bool], capacity: Callable[[], int],
                   cluster_nodes: Callable[[], int] | None = None) -> None:
        """Gauges of this node read when scraped: draining, capacity and (in a cluster) the live nodes it sees."""
        self._node_draining.set_function(lambda: float(draining()))
        self._node_capacity.set_function(lambda: float(capacity()))
        if cluster_nodes is not None:
            self._cluster_nodes.set_function(lambda: float(cluster_nodes()))

    def reaped(self, calls: int) -> None:
        """This node archived ``calls`` live calls of a dead node as interrupted."""
        self._reaped.inc(calls)

    def region_state(self, region: str, state: object, latency: float | None = None) -> None:
        """Set a Region's health (``healthy``/``degraded``/``unhealthy`` or 2/1/0) and latency in seconds."""
        code = _state_code(state)
        label = self._region_label(region)
        self._region_health.labels(label).set(code)
        if latency is not None and math.isfinite(latency):
            self._region_latency.labels(label).set(latency)
        else:
            latency = None
        with self._lock:
            previous = self._regions.get(label)
            if latency is None and previous is not None:
                latency = previous[1]
            self._regions[label] = (code, latency)

    # -- what the server serves --------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The ``/metrics`` body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE

    def snapshot(self) -> dict[str, Any]:
        """The dashboard's numbers as a JSON-ready dict (latencies in milliseconds)."""
        with self._lock:
            self._roll_day()
            samples = {stage: list(r) for stage, r in self._reservoirs.items()}
            stage_counts = dict(self._stage_counts)
            cache_counts = {ns: tuple(c) for ns, c in self._cache_counts.items()}
            regions = dict(self._regions)
            snapshot: dict[str, Any] = {
                "active_calls": self._active_count,
                "calls_total": self._calls_total,
                "errors": dict(sorted(self._error_counts.items())),
                "incidents": dict(sorted(self._incident_counts.items())),
                "calls_by_country": dict(sorted(self._calls_by["country"].items())),
                "calls_by_model": dict(sorted(self._calls_by["model"].items())),
                "failovers": self._failover_count,
                "cost_today_usd": float(self._cost_today),
                "cost_day": self._cost_day.isoformat(),
            }
        latency: dict[str, dict[str, Any]] = {}
        for stage, values in samples.items():
            p50, p95 = percentile(values, 0.5), percentile(values, 0.95)
            latency[stage] = {
                "count": stage_counts[stage],
                "p50_ms": None if p50 is None else round(p50 * 1000, 3),
                "p95_ms": None if p95 is None else round(p95 * 1000, 3),
            }
        hits = sum(c[0] for c in cache_counts.values())
        misses = sum(c[1] for c in cache_counts.values())
        snapshot["latency"] = latency
        snapshot["cache"] = {
            "hits": hits,
            "misses": misses,
            "hit_ratio": _ratio(hits, misses),
            "namespaces": {
                ns: {"hits": h, "misses": m, "hit_ratio": _ratio(h, m)} for ns, (h, m) in sorted(cache_counts.items())
            },
        }
        snapshot["regions"] = {
            region: {
                "state": _STATE_NAMES[code],
                "code": code,
                "latency_ms": None if seconds is None else round(seconds * 1000, 1),
            }
            for region, (code, seconds) in sorted(regions.items())
        }
        return snapshot

    def metric_names(self) -> frozenset[str]:
        """Every sample name the registry can expose (``…_bucket``, ``…_total`` …), to check rule files."""
        names: set[str] = set()
        for family in self.registry.collect():
            if family.type == "histogram":
                names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
            elif family.type == "counter":
                names.add(f"{family.name}_total")
            else:
                names.add(family.name)
        return frozenset(names)

    def _roll_day(self) -> None:
        # Caller holds the lock. "Today" is the server's calendar day.
        day = self._today()
        if day != self._cost_day:
            self._cost_day = day
            self._cost_today = Decimal(0)


def _ratio(hits: int, misses: int) -> float | None:
    total = hits + misses
    return None if total == 0 else round(hits / total, 4)
