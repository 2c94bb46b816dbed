"""Tests for the Prometheus metrics and the dashboard snapshot."""

from __future__ import annotations

import enum
from datetime import date
from decimal import Decimal

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aybiza.observability.metrics import Metrics, country_label, percentile
from aybiza.pipeline import CacheKind, CallContext, CallLedger, IncidentKind, Stage


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The rendered /metrics body as {(sample name, sorted labels): value}."""
    body, _ = metrics.render()
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_rendered_metrics_carry_the_expected_labels_after_a_call() -> None:
    metrics = Metrics()
    metrics.call_started()
    metrics.timing(Stage.VOICE_TO_VOICE, 0.62)
    metrics.observe_timing("stt_final", 0.18)
    metrics.cache("agent_config", hit=True)
    metrics.cache(CacheKind.ANSWER, hit=False)
    metrics.error("ProviderTimeout")
    metrics.failover("us-east-1", "us-west-2")
    metrics.incident(IncidentKind.TTS_FALLBACK)
    metrics.region_state("us-east-1", "degraded", 0.09)
    metrics.call_ended(Decimal("0.0412"), region="us-west-2", country="us",
                       model="us.anthropic.claude-haiku-4-5-20251001-v1:0", reason="hangup")

    got = samples(metrics)
    calls = (
        "aybiza_calls_total",
        (("country", "US"), ("model", "us.anthropic.claude-haiku-4-5-20251001-v1:0"), ("region", "us-west-2")),
    )
    assert got[calls] == 1  # counted at the end, with the region and the model that answered
    assert got[("aybiza_cache_requests_total", (("namespace", "agent_config"), ("result", "hit")))] == 1
    assert got[("aybiza_cache_requests_total", (("namespace", "llm"), ("result", "miss")))] == 1
    assert got[("aybiza_errors_total", (("kind", "ProviderTimeout"),))] == 1
    assert got[("aybiza_failovers_total", (("from_region", "us-east-1"), ("to_region", "us-west-2")))] == 1
    assert got[("aybiza_incidents_total", (("kind", "tts_fallback"),))] == 1
    assert got[("aybiza_call_cost_usd_total", (("region", "us-west-2"),))] == pytest.approx(0.0412)
    assert got[("aybiza_region_health", (("region", "us-east-1"),))] == 1
    assert got[("aybiza_region_latency_seconds", (("region", "us-east-1"),))] == pytest.approx(0.09)
    assert got[("aybiza_active_calls", ())] == 0
    assert got[("aybiza_voice_to_voice_seconds_count", ())] == 1
    assert got[("aybiza_voice_to_voice_seconds_bucket", (("le", "0.75"),))] == 1
    assert got[("aybiza_voice_to_voice_seconds_bucket", (("le", "0.5"),))] == 0
    assert got[("aybiza_stt_final_seconds_bucket", (("le", "0.2"),))] == 1


def test_a_call_is_counted_when_it_ends_not_when_it_starts() -> None:
    metrics = Metrics()
    metrics.call_started()
    assert metrics.snapshot()["active_calls"] == 1 and metrics.snapshot()["calls_total"] == 0
    assert not any(name == "aybiza_calls_total" for name, _ in samples(metrics))
    metrics.call_ended(0.01, region="eu-west-2", country="GB", model="faq", reason="hangup")
    snap = metrics.snapshot()
    assert snap["active_calls"] == 0 and snap["calls_total"] == 1
    assert snap["calls_by_country"] == {"GB": 1} and snap["calls_by_model"] == {"faq": 1}
    assert snap["errors"] == {}  # a normal end is not an error


def test_a_failed_call_counts_its_end_reason_as_an_error() -> None:
    metrics = Metrics()
    for reason in ("model_unavailable", "model_unavailable", "hangup"):
        metrics.call_started()
        metrics.call_ended(0, region="local", reason=reason, failed=reason != "hangup")
    snap = metrics.snapshot()
    assert snap["errors"] == {"model_unavailable": 2}
    assert snap["calls_by_country"] == {"unknown": 3} and snap["calls_by_model"] == {"none": 3}
    assert samples(metrics)[("aybiza_errors_total", (("kind", "model_unavailable"),))] == 2


def test_incidents_are_counted_and_timed() -> None:
    metrics = Metrics()
    assert metrics.since_incident(IncidentKind.STT_FALLBACK) is None
    metrics.incident(IncidentKind.STT_FALLBACK)
    metrics.incident(IncidentKind.STT_FALLBACK)
    metrics.incident(IncidentKind.MODEL_FAILED)
    assert metrics.snapshot()["incidents"] == {"model_failed": 1, "stt_fallback": 2}
    since = metrics.since_incident(IncidentKind.STT_FALLBACK)
    assert since is not None and 0 <= since < 5
    assert metrics.since_incident(IncidentKind.TTS_FALLBACK) is None


def test_content_type_is_the_prometheus_text_format() -> None:
    body, content_type = Metrics().render()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"# TYPE aybiza_active_calls gauge" in body


def test_edge_frame_histogram_resolves_microseconds() -> None:
    metrics = Metrics()
    metrics.observe_timing("edge_frame", 18e-6)
    got = samples(metrics)
    assert got[("aybiza_edge_frame_seconds_bucket", (("le", "1e-05"),))] == 0
    assert got[("aybiza_edge_frame_seconds_bucket", (("le", "2.5e-05"),))] == 1


def test_unknown_stages_and_bad_samples_are_ignored() -> None:
    metrics = Metrics()
    metrics.observe_timing("warp_drive", 0.1)
    metrics.observe_timing("stt_final", float("nan"))
    metrics.observe_timing("stt_final", -1.0)
    assert metrics.snapshot()["latency"]["stt_final"]["count"] == 0
    assert not any("warp" in name for name in metrics.metric_names())


@pytest.mark.parametrize(
    ("raw", "label"), [("US", "US"), ("gb", "GB"), ("UK", "GB"), (" de ", "DE"), ("XX", "unknown"), ("", "unknown"),
                       ("USA", "unknown"), ("+14155550100", "unknown")]
)  # fmt: skip
def test_countries_outside_iso_3166_are_bucketed(raw: str, label: str) -> None:
    assert country_label(raw) == label


def test_label_values_are_bounded() -> None:
    metrics = Metrics(max_label_values=3)
    for i in range(10):
        metrics.error(f"kind-{i}")
    kinds = {labels for (name, labels) in samples(metrics) if name == "aybiza_errors_total"}
    assert kinds == {(("kind", f"kind-{i}"),) for i in range(3)} | {(("kind", "other"),)}
    assert metrics.snapshot()["errors"]["other"] == 7


def test_fresh_registries_are_independent() -> None:
    first, second = Metrics(), Metrics()
    first.call_started()
    assert first.snapshot()["active_calls"] == 1
    assert second.snapshot()["active_calls"] == 0
    assert first.registry is not second.registry


def test_snapshot_percentiles_cache_ratio_and_regions() -> None:
    metrics = Metrics()
    for ms in range(1, 101):
        metrics.observe_timing("llm_first_token", ms / 1000)
    for hit in (True, True, True, False):
        metrics.cache("agent_config", hit)
    metrics.region_state("eu-west-2", "unhealthy")
    metrics.region_state("us-east-1", 2, 0.0125)

    snap = metrics.snapshot()
    assert snap["latency"]["llm_first_token"] == {"count": 100, "p50_ms": 50.0, "p95_ms": 95.0}
    assert snap["latency"]["tts_first_byte"] == {"count": 0, "p50_ms": None, "p95_ms": None}
    assert snap["cache"]["hit_ratio"] == 0.75
    assert snap["cache"]["namespaces"]["agent_config"] == {"hits": 3, "misses": 1, "hit_ratio": 0.75}
    assert snap["regions"] == {
        "eu-west-2": {"state": "unhealthy", "code": 0, "latency_ms": None},
        "us-east-1": {"state": "healthy", "code": 2, "latency_ms": 12.5},
    }


def test_reservoir_keeps_recent_samples() -> None:
    metrics = Metrics(reservoir_size=10)
    for _ in range(100):
        metrics.observe_timing("tts_first_byte", 2.0)
    for _ in range(10):
        metrics.observe_timing("tts_first_byte", 0.1)
    assert metrics.snapshot()["latency"]["tts_first_byte"]["p95_ms"] == 100.0


def test_cost_today_starts_over_on_a_new_day() -> None:
    day = [date(2026, 11, 26)]
    metrics = Metrics(today=lambda: day[0])
    metrics.call_started()
    metrics.call_ended(0.25, region="us-east-1")
    metrics.call_started()
    metrics.call_ended(0.5, region="us-east-1")
    assert metrics.snapshot()["cost_today_usd"] == 0.75
    day[0] = date(2026, 11, 27)
    assert metrics.snapshot()["cost_today_usd"] == 0.0
    assert metrics.snapshot()["cost_day"] == "2026-11-27"
    # The Prometheus counter is cumulative and does not reset.
    assert samples(metrics)[("aybiza_call_cost_usd_total", (("region", "us-east-1"),))] == 0.75


def test_active_calls_never_go_negative_and_bad_costs_count_as_zero() -> None:
    metrics = Metrics()
    metrics.call_ended(-3, region="us-east-1")
    metrics.call_ended(float("nan"), region="us-east-1")
    assert metrics.snapshot()["active_calls"] == 0
    assert metrics.snapshot()["cost_today_usd"] == 0.0


class Health(enum.Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"


def test_region_state_accepts_names_codes_and_enums() -> None:
    metrics = Metrics()
    metrics.region_state("a", Health.DEGRADED)
    metrics.region_state("b", 0)
    metrics.region_state("c", "Healthy")
    assert {r: v["code"] for r, v in metrics.snapshot()["regions"].items()} == {"a": 1, "b": 0, "c": 2}
    for bad in ("sideways", 7, True, None):
        with pytest.raises(ValueError):
            metrics.region_state("d", bad)


def test_metrics_are_the_ledger_sink_of_a_call() -> None:
    metrics = Metrics()
    ctx = CallContext(call_id="CA123", ledger=CallLedger(metrics))
    ctx.ledger.time(Stage.VOICE_TO_VOICE, 0.7)
    ctx.ledger.time(Stage.CACHE_ANSWER, 0.01)  # measured per call, not exported
    ctx.ledger.cache(CacheKind.AUDIO, hit=True)
    ctx.ledger.failover("us-east-1", "us-west-2")
    ctx.ledger.incident(IncidentKind.MODEL_FAILED, "every region throttled")
    snap = metrics.snapshot()
    assert snap["latency"]["voice_to_voice"]["count"] == 1
    assert snap["cache"]["namespaces"]["tts"] == {"hits": 1, "misses": 0, "hit_ratio": 1.0}
    assert snap["failovers"] == 1 and snap["incidents"] == {"model_failed": 1}
    body, _ = metrics.render()
    assert b"CA123" not in body


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1, 2, 3, 4], 0.5) == 2
    assert percentile([1, 2, 3, 4], 1.0) == 4


def test_preemptive_replies_used_and_discarded_are_counted_from_the_ledger() -> None:
    metrics = Metrics()
    ledger = CallLedger(metrics)
    ledger.preempted("discarded")
    ledger.preempted("used")
    ledger.preempted("used")
    got = samples(metrics)
    assert got[("aybiza_preemptions_total", (("outcome", "used"),))] == 2
    assert got[("aybiza_preemptions_total", (("outcome", "discarded"),))] == 1
    assert ledger.usage().preemptions == {"discarded": 1, "used": 2}


def test_the_node_gauges_are_read_when_scraped_and_reaped_calls_count() -> None:
    metrics = Metrics()
    state = {"draining": False, "nodes": 3}
    metrics.node_state(lambda: bool(state["draining"]), lambda: 40, lambda: int(state["nodes"]))
    metrics.reaped(2)
    text = generate_latest(metrics.registry).decode()
    assert "aybiza_node_draining 0.0" in text and "aybiza_node_capacity 40.0" in text
    assert "aybiza_cluster_nodes 3.0" in text and "aybiza_reaped_calls_total 2.0" in text
    state.update(draining=True, nodes=2)
    text = generate_latest(metrics.registry).decode()
    assert "aybiza_node_draining 1.0" in text and "aybiza_cluster_nodes 2.0" in text
