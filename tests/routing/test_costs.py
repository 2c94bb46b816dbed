"""Tests for the per-call cost ledger: line items, totals, notes and aggregation."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from aybiza.pipeline import Usage
from aybiza.pipeline.ledger import TokenUse
from aybiza.routing.costs import CallCost, aggregate, cost_of, tokens_cost
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


def _tokens(model: str, input_tokens: int = 0, output_tokens: int = 0) -> dict[str, TokenUse]:
    return {model: TokenUse(input=input_tokens, output=output_tokens)}


def test_known_call_costs_usage_times_listed_prices() -> None:
    usage = Usage(
        tokens=_tokens(f"us.{HAIKU3}", 12_000, 800),
        stt_seconds={"nova-3": 95},
        tts_chars={"aura-2": 1500},
        gated_seconds=60,
        audio_seconds=155,
        answers={"faq": 2},
    )
    cost = cost_of(usage, "us-east-1", 2.5, default_prices())

    # By hand, at the packaged table's prices (docs/protocols.md §3.8, §5):
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
    assert [(line.kind, line.detail) for line in cost.lines if line.kind in ("stt", "tts")] == [
        ("stt", "nova-3"), ("tts", "aura-2"),
    ]
    assert cost.edge_savings == Decimal("0.0077")  # one gated minute not sent to Deepgram
    assert not cost.estimated
    assert sum(line.amount for line in cost.lines) == cost.total


def test_unknown_model_is_a_flagged_estimate_or_an_error_when_strict() -> None:
    usage = Usage(tokens=_tokens("anthropic.claude-future-9", 1_000_000))
    cost = cost_of(usage, "us-east-1", 0, default_prices())
    assert cost.estimated
    assert cost.total == Decimal("3.00")  # the table's unknown_model input rate
    assert any("claude-future-9" in note for note in cost.notes)
    with pytest.raises(UnknownPriceError, match="claude-future-9"):
        cost_of(usage, "us-east-1", 0, default_prices(), strict=True)


def test_region_override_and_change_dates_from_a_custom_table(small_table: PriceTable) -> None:
    usage = Usage(tokens=_tokens("vendor.model-a-v1:0", 1_000_000, 1_000_000))
    home = cost_of(usage, "us-east-1", 0, small_table, transport="webrtc")
    away = cost_of(usage, "ap-southeast-1", 0, small_table, transport="webrtc")
    later = cost_of(usage, "us-east-1", 0, small_table, transport="webrtc", on=date(2026, 7, 1))
    assert home.total == Decimal("3.00")
    assert away.total == Decimal("4.50")
    assert later.total == Decimal("12.00")
    assert any("extended access" in note for note in later.notes)


def test_webrtc_calls_have_no_telephony_and_local_models_are_free(small_table: PriceTable) -> None:
    usage = Usage(tokens=_tokens("local", 5000, 700), stt_seconds={"nova-3": 60}, answers={"faq": 3})
    cost = cost_of(usage, "local", 1.2, small_table, transport="webrtc")
    assert [line.kind for line in cost.lines] == ["stt"]
    assert cost.total == Decimal("0.01")
    twilio = cost_of(usage, "local", 1.2, small_table)
    assert twilio.total == Decimal("0.01") + 2 * Decimal("0.01") + 2 * Decimal("0.005")


def test_embedded_engines_and_self_hosted_models_cost_nothing(small_table: PriceTable) -> None:
    tokens = _tokens("llama3.2:3b", 4000, 90)
    embedded = Usage(tokens=tokens, stt_seconds={"whisper": 120}, tts_chars={"piper": 900}, gated_seconds=30)
    cost = cost_of(embedded, "local", 2, small_table, transport="webrtc")
    assert cost.lines == ()
    assert not cost.estimated
    assert cost.edge_savings == 0  # silence kept from a free recogniser saves nothing
    assert any("llama3.2:3b" in note and "self-hosted" in note for note in cost.notes)
    deepgram = Usage(tokens=tokens, stt_seconds={"nova-3": 120}, tts_chars={"aura-2": 900})
    priced = cost_of(deepgram, "local", 2, small_table, transport="webrtc")
    assert [line.kind for line in priced.lines] == ["stt", "tts"]


def test_a_call_that_fell_back_pays_only_for_the_paid_engines_it_used(small_table: PriceTable) -> None:
    # Deepgram recognised the first minute, then whisper took over; Aura spoke some, piper the rest.
    usage = Usage(stt_seconds={"nova-3": 60, "whisper": 90}, tts_chars={"aura-2": 1000, "piper": 400})
    cost = cost_of(usage, "local", 0, small_table, transport="webrtc")
    assert [(line.kind, line.detail, line.amount) for line in cost.lines] == [
        ("stt", "nova-3", Decimal("0.01")), ("tts", "aura-2", Decimal("0.02")),
    ]


def test_unpriced_engines_are_reported_not_silently_dropped(small_table: PriceTable) -> None:
    usage = Usage(stt_seconds={"nova-9": 60}, tts_chars={"aura-9": 1000})
    cost = cost_of(usage, "us-east-1", 0, small_table, transport="webrtc")
    assert cost.total == Decimal("0.01") + Decimal("0.02")  # priced as the table's default engines
    assert any("nova-9" in note and "nova-3" in note for note in cost.notes)
    assert any("aura-9" in note and "aura-2" in note for note in cost.notes)
    with pytest.raises(UnknownPriceError, match="nova-9"):
        cost_of(usage, "us-east-1", 0, small_table, transport="webrtc", strict=True)
    counters = Usage(interruptions=2, model_errors=1, stt_reconnects=1, audio_seconds=9, answers={"faq": 1},
                     failovers=[("us-east-1", "us-west-2")])
    assert cost_of(counters, "us-east-1", 0, small_table).notes == ()


def test_call_cost_round_trips_through_its_record_form() -> None:
    usage = Usage(tokens=_tokens(f"eu.{HAIKU3}", 4321, 123), tts_chars={"aura-2": 77})
    cost = cost_of(usage, "eu-central-1", 0.4, default_prices())
    again = CallCost.from_dict(cost.to_dict())
    assert again == cost
    assert cost.to_dict()["total_micros"] == cost.total_micros


def test_tokens_cost_is_what_the_model_tokens_cost_so_far(small_table: PriceTable) -> None:
    usage = Usage(tokens={**_tokens("vendor.model-a-v1:0", 1_000_000, 500_000), **_tokens("local", 9000, 9000)},
                  stt_seconds={"nova-3": 600}, tts_chars={"aura-2": 10_000})
    assert tokens_cost(usage, "us-east-1", small_table) == pytest.approx(2.00)  # 1.00 + 0.5 x 2.00; no audio
    assert tokens_cost(usage, "ap-southeast-1", small_table) == pytest.approx(3.00)
    assert tokens_cost(Usage(), "us-east-1", small_table) == 0.0


def test_aggregate_totals_per_region_and_model() -> None:
    table = default_prices()
    a = cost_of(Usage(tokens=_tokens(HAIKU3, 1_000_000)), "us-east-1", 0, table)
    b = cost_of(Usage(tokens=_tokens(HAIKU3, 2_000_000)), "eu-west-2", 0, table)
    c = cost_of(Usage(tokens=_tokens(f"us.{HAIKU45}", 1_000_000)), "us-east-1", 0, table)
    totals = aggregate([a, b, c])
    assert totals.calls == 3
    assert totals.by_region == {"us-east-1": Decimal("1.35"), "eu-west-2": Decimal("0.50")}
    assert totals.by_model == {HAIKU3: Decimal("0.75"), f"us.{HAIKU45}": Decimal("1.10")}
    assert totals.total == Decimal("1.85")
    assert totals.per_call == Decimal("0.616667")
