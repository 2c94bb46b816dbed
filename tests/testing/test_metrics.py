"""Reading a number out of a /metrics page, as the e2e and security tests do."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from aybiza.testing.metrics import metric


def _page() -> str:
    registry = CollectorRegistry()
    refused = Counter("aybiza_refused", "refused", ["endpoint", "reason"], registry=registry)
    refused.labels("http", "header_timeout").inc(2)
    refused.labels("http", "connection_cap").inc(3)
    refused.labels("webrtc_offer", 'no "connection"').inc(5)  # a quoted label value is escaped on the page
    seconds = Histogram("aybiza_tts_first_byte_seconds", "first byte", registry=registry)
    seconds.observe(0.1)
    seconds.observe(0.2)
    return generate_latest(registry).decode()


def test_samples_whose_labels_include_the_asked_ones_are_summed() -> None:
    page = _page()
    assert metric(page, "aybiza_refused_total", endpoint="http") == 5
    assert metric(page, "aybiza_refused_total", endpoint="http", reason="connection_cap") == 3
    assert metric(page, "aybiza_refused_total", reason='no "connection"') == 5
    assert metric(page, "aybiza_refused_total") == 10


def test_a_histogram_count_is_a_sample_and_a_missing_series_is_zero() -> None:
    page = _page()
    assert metric(page, "aybiza_tts_first_byte_seconds_count") == 2
    assert metric(page, "aybiza_refused_total", endpoint="sip") == 0
    assert metric(page, "aybiza_no_such_thing_total") == 0
