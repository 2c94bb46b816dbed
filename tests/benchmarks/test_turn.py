"""The turn breakdown: consecutive parts that add up to the voice-to-voice total; our overhead apart."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.capacity import rss_per_call_mb  # noqa: E402
from benchmarks.turn import OVERHEAD_PARTS, breakdown, summarise  # noqa: E402


def row(offset: float = 0.0, egress: float = 0.002) -> dict[str, float]:
    """Stamps of one turn (seconds): 400 ms of silence, 150/350/100 ms providers, a little of ours."""
    t = 100.0 + offset
    stamps = {"spoken_at": t}
    for name, step in (("window_sent", 0.4), ("speech_stopped", 0.0005), ("stt_deadline", 0.15),
                       ("transcript", 0.001), ("user_turn", 0.0001), ("llm_deadline", 0.35), ("first_text", 0.001),
                       ("tts_in", 0.00005), ("tts_deadline", 0.1), ("first_audio", 0.001), ("reply_at", egress)):
        t += step
        stamps[name] = t
    return stamps


def test_a_turns_parts_sum_to_its_total_and_overhead_is_only_ours() -> None:
    parts = breakdown(row())
    assert parts["endpointing"] == pytest.approx(0.4)
    assert (parts["stt"], parts["llm"], parts["tts"]) == pytest.approx((0.15, 0.35, 0.1))
    assert parts["overhead"] == pytest.approx(0.0005 + 0.001 + 0.0001 + 0.001 + 0.00005 + 0.001 + 0.002)
    assert parts["overhead"] == pytest.approx(sum(parts[name] for name in OVERHEAD_PARTS))
    headline = parts["endpointing"] + parts["stt"] + parts["llm"] + parts["tts"] + parts["overhead"]
    assert headline == pytest.approx(parts["total"])


def test_summary_means_add_up_and_overhead_p95_reflects_slow_egress() -> None:
    rows = [row(i, egress=0.002) for i in range(19)] + [row(50, egress=0.040)]
    summary = summarise(rows)
    assert summary["turns"] == 20
    assert summary["parts_sum_error_ms"] < 1e-6
    assert sum(summary["breakdown_mean_ms"].values()) == pytest.approx(summary["breakdown_mean_total_ms"], abs=0.01)
    assert summary["overhead_ms"]["max_ms"] == pytest.approx(5.65 + 38.0, abs=0.01)
    assert summary["overhead_ms"]["p50_ms"] == pytest.approx(5.65, abs=0.01)
    assert summarise([]) == {"turns": 0}


def test_rss_per_call_is_the_slope_over_steps() -> None:
    steps = [{"calls": 50, "rss_mb": 150.0}, {"calls": 100, "rss_mb": 175.0}, {"calls": 200, "rss_mb": 225.0}]
    assert rss_per_call_mb(steps) == pytest.approx(0.5)
    assert rss_per_call_mb(steps[:1]) is None
