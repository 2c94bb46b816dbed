"""Tests for the per-call cost ledger: line items, totals, notes and aggregation."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from aybiza.routing.costs import CallCost, aggregate, cost_of
from aybiza.routing.prices import PriceTable, UnknownPriceError, default_prices, load_prices

HAIKU3 = "anthropic.claude-3-haiku-20240307-v1:0"
HAIKU45 = "anthropic.claude-haiku-4-5-20251001-v1:0"
SONNET35 = "anthropic.claude-3-5-sonnet-20241022-v2:0"

SMALL_TABLE = """
as_of: 2026-01-01
free_models: [local, whisper, piper]
bedrock:
  profile_prefixes: [us, eu, apac, global]
  providers: [vendor]
  unknown_model: {input: 10, output: 50}
  models:
    vendor.model-a-v1:0:
      name: Model A
      input: 1.00
      output: 2.00
      changes:
        - {from: 2026-06-01, input: 4.00, output: 8.00, note: extended access}
      eol: 2026-09-01
  regions:
    ap-southeast-1:
      vendor.model-a-v1:0: {input: 1.50, output: 3.00}
deepgram:
  stt_per_minute: {nova-3: 0.01}
  tts_per_1k_chars: {aura-2: 0.02}
twilio:
  voice_per_minute: {inbound_local: 0.01}
  media_streams_per_minute: 0.005
"""


@pytest.fixture
def small_table(tmp_path: Path) -> PriceTable:
    path = tmp_path / "prices.yaml"
    path.write_text(SMALL_TABLE)
    return load_prices(path)


def test_known_call_costs_usage_times_listed_prices() -> None:
    usage = {
        f"tokens_in:us.{HAIKU3}": 12_000,
        f"tokens_out:us.{HAIKU3}": 800,
        "stt_seconds": 95,
        "tts_chars": 1500,
        "gated_seconds": 60,
        "audio_seconds": 155,
        "faq_answers": 2,
    }
    cost = cost_of(usage, "us-east-1", 2.5, default_prices())

    # By hand, at the packaged table's prices (PROTOCOLS.md §3.8, §5):
    llm = Decimal("12000") * Decimal("0.25") / 10**6 + Decimal("800") * Decimal("1.25") / 10**6
    stt = Decimal("0.012192")  # 95 s / 60 x $0.0077 = 0.0121916.. -> rounded to a micro-dollar
    tts = Decimal("1.5") * Decimal("0.030")
    twilio = 3 * Decimal("0.0085") + 3 * Decimal("0.0044")  # 2.5 min billed as 3, call and stream
    assert cost.total == llm + stt + tts + twilio == Decimal("0.099892")
    assert cost.total_micros == 99_892
    assert cost.by_kind() == {
        "llm_input": Decimal("0.003"),
        "llm_output": Decimal("0.001"),
        "stt": stt,
        "tts": tts,
        "telephony": Decimal("0.0255"),
        "media_streams": Decimal("0.0132"),
    }
    assert cost.edge_savings == Decimal("0.0077")  # one gated minute not sent to Deepgram
    assert not cost.estimated
    assert sum(line.amount for line in cost.lines) == cost.total


def test_unknown_model_is_a_flagged_estimate_or_an_error_when_strict() -> None:
    usage = {"tokens_in:anthropic.claude-future-9": 1_000_000}
    cost = cost_of(usage, "us-east-1", 0, default_prices())
    assert cost.estimated
    assert cost.total == Decimal("3.00")  # the table's unknown_model input rate
    assert any("claude-future-9" in note for note in cost.notes)
    with pytest.raises(UnknownPriceError, match="claude-future-9"):
        cost_of(usage, "us-east-1", 0, default_prices(), strict=True)


def test_region_override_and_change_dates_from_a_custom_table(small_table: PriceTable) -> None:
    usage = {"tokens_in:vendor.model-a-v1:0": 1_000_000, "tokens_out:vendor.model-a-v1:0": 1_000_000}
    home = cost_of(usage, "us-east-1", 0, small_table, transport="webrtc")
    away = cost_of(usage, "ap-southeast-1", 0, small_table, transport="webrtc")
    later = cost_of(usage, "us-east-1", 0, small_table, transport="webrtc", on=date(2026, 7, 1))
    assert home.total == Decimal("3.00")
    assert away.total == Decimal("4.50")
    assert later.total == Decimal("12.00")
    assert any("extended access" in note for note in later.notes)


def test_webrtc_calls_have_no_telephony_and_local_models_are_free(small_table: PriceTable) -> None:
    usage = {"tokens_in:local": 5000, "tokens_out:local": 700, "stt_seconds": 60, "faq_answers": 3}
    cost = cost_of(usage, "local", 1.2, small_table, transport="webrtc")
    assert [line.kind for line in cost.lines] == ["stt"]
    assert cost.total == Decimal("0.01")
    twilio = cost_of(usage, "local", 1.2, small_table)
    assert twilio.total == Decimal("0.01") + 2 * Decimal("0.01") + 2 * Decimal("0.005")


def test_embedded_engines_and_self_hosted_models_cost_nothing(small_table: PriceTable) -> None:
    usage = {"stt_seconds": 120, "tts_chars": 900, "tokens_in:llama3.2:3b": 4000, "tokens_out:llama3.2:3b": 90}
    cost = cost_of(usage, "local", 2, small_table, transport="webrtc", stt_model="whisper", tts_model="piper")
    assert cost.lines == ()
    assert not cost.estimated
    assert any("llama3.2:3b" in note and "self-hosted" in note for note in cost.notes)
    deepgram = cost_of(usage, "local", 2, small_table, transport="webrtc")
    assert [line.kind for line in deepgram.lines] == ["stt", "tts"]


def test_unpriced_usage_is_reported_not_silently_dropped(small_table: PriceTable) -> None:
    cost = cost_of({"video_minutes": 3}, "us-east-1", 0, small_table)
    assert cost.total == 0
    assert any("video_minutes" in note for note in cost.notes)
    counters = {"interruptions": 2, "llm_errors": 1, "stt_reconnects": 1, "tts_reconnects": 1, "audio_seconds": 9}
    assert cost_of(counters, "us-east-1", 0, small_table).notes == ()


def test_call_cost_round_trips_through_its_record_form() -> None:
    usage = {f"tokens_in:eu.{HAIKU3}": 4321, f"tokens_out:eu.{HAIKU3}": 123, "tts_chars": 77}
    cost = cost_of(usage, "eu-central-1", 0.4, default_prices())
    again = CallCost.from_dict(cost.to_dict())
    assert again == cost
    assert cost.to_dict()["total_micros"] == cost.total_micros


def test_aggregate_totals_per_region_and_model() -> None:
    table = default_prices()
    a = cost_of({f"tokens_in:{HAIKU3}": 1_000_000}, "us-east-1", 0, table)
    b = cost_of({f"tokens_in:{HAIKU3}": 2_000_000}, "eu-west-2", 0, table)
    c = cost_of({f"tokens_in:us.{HAIKU45}": 1_000_000}, "us-east-1", 0, table)
    totals = aggregate([a, b, c])
    assert totals.calls == 3
    assert totals.by_region == {"us-east-1": Decimal("1.35"), "eu-west-2": Decimal("0.50")}
    assert totals.by_model == {HAIKU3: Decimal("0.75"), f"us.{HAIKU45}": Decimal("1.10")}
    assert totals.total == Decimal("1.85")
    assert totals.per_call == Decimal("0.616667")
