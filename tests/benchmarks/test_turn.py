"""The turn breakdown: parts from the caller's clock and our stages' timings that add up to the total."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.capacity import rss_per_call_mb  # noqa: E402
from benchmarks.turn import HEADLINE, breakdown, summarise  # noqa: E402

PROVIDERS = {"stt": 0.150, "llm": 0.350, "tts": 0.100}


def row(offset: float = 0.0, egress: float = 0.002) -> dict[str, float]:
    """One turn (seconds): 400 ms of the caller's silence, the stages' recorded timings, a little of ours."""
    spoken = 100.0 + offset
    stt, llm, tts = 0.1507, 0.3518, 0.1005
    ours = 0.0004 + 0.0003 + 0.0002 + 0.0001 + egress  # window frame in, turn-taking, hand-offs, first audio out
    return {"spoken_at": spoken, "window_sent": spoken + 0.4, "reply_at": spoken + 0.4 + stt + llm + tts + ours,
            "stt_final": stt, "llm_first_sentence": llm, "llm_first_token": llm - 0.0001, "tts_first_byte": tts,
            "voice_to_voice": 0.4 + stt + llm + tts + ours - 0.0205}


def test_a_turns_parts_sum_to_its_total_and_overhead_is_what_the_stages_did_not_time() -> None:
    parts = breakdown(row(), PROVIDERS)
    assert parts["endpointing"] == pytest.approx(0.4)
    assert (parts["stt"], parts["llm"], parts["tts"]) == pytest.approx((0.1507, 0.3518, 0.1005))
    assert parts["overhead"] == pytest.approx(0.001 + 0.002)
    assert sum(parts[name] for name in HEADLINE) == pytest.approx(parts["total"])
    assert parts["outside_server"] == pytest.approx(0.0205), "what the server's own voice-to-voice leaves out"
    assert parts["beyond_llm"] == pytest.approx(0.0018)
    assert parts["all_ours"] == pytest.approx(0.003 + 0.0007 + 0.0018 + 0.0005), "overhead + stages beyond providers"


def test_summary_means_add_up_and_overhead_p95_reflects_slow_egress() -> None:
    rows = [row(i, egress=0.002) for i in range(19)] + [row(50, egress=0.040)]
    summary = summarise(rows, PROVIDERS)
    assert summary["turns"] == 20
    assert summary["parts_sum_error_ms"] < 1e-6
    assert sum(summary["breakdown_mean_ms"].values()) == pytest.approx(summary["breakdown_mean_total_ms"], abs=0.01)
    assert summary["overhead_ms"]["max_ms"] == pytest.approx(1.0 + 40.0, abs=0.01)
    assert summary["overhead_ms"]["p50_ms"] == pytest.approx(3.0, abs=0.01)
    assert summary["beyond_provider_mean_ms"]["stt"] == pytest.approx(0.7, abs=0.01)
    assert summary["server_voice_to_voice_ms"]["p50_ms"] < summary["voice_to_voice_ms"]["p50_ms"]
    assert summarise([], PROVIDERS) == {"turns": 0}


def test_rss_per_call_is_the_slope_over_steps() -> None:
    steps = [{"calls": 50, "rss_mb": 150.0}, {"calls": 100, "rss_mb": 175.0}, {"calls": 200, "rss_mb": 225.0}]
    assert rss_per_call_mb(steps) == pytest.approx(0.5)
    assert rss_per_call_mb(steps[:1]) is None
