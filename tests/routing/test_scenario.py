"""Tests for the monthly scenario calculator."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from aybiza.errors import ConfigError
from aybiza.pipeline.ledger import TokenUse, Usage
from aybiza.routing.scenario import (
    DESIGN_PRESET,
    Scenario,
    compute,
    format_scenario,
    measure,
    measured_scenario,
)

HAIKU45 = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


def test_design_inputs_reproduce_the_design_figures() -> None:
    result = compute(DESIGN_PRESET)
    assert result.hybrid.monthly == Decimal("6070")
    assert result.cloud_only.monthly == Decimal("8500")
    assert result.saving == Decimal("2430")
    assert round(result.saving_share * 100, 1) == Decimal("28.6")
    assert result.hybrid.per_call == Decimal("0.00607")
    assert round(result.hybrid.per_call, 3) == Decimal("0.006")
    assert result.cloud_only.per_call == Decimal("0.0085")


def test_design_hybrid_lines_are_the_designs_line_items() -> None:
    hybrid = compute(DESIGN_PRESET).hybrid
    # Aybiza.Edge.CostAnalyzer.calculate_monthly_costs in the design.
    assert {line.key: line.amount for line in hybrid.lines} == {
        "edge_plan": 20,
        "edge_compute": 500,
        "edge_cache": 50,
        "edge_bandwidth": 1000,
        "cloud_compute": 2000,
        "cloud_storage": 300,
        "cloud_networking": 500,
        "cloud_ai": 1500,
        "cloud_other": 200,
    }
    assert hybrid.by_tier() == {"edge": 1570, "cloud": 4500}


def test_better_edge_ratios_lower_the_hybrid_bill_only() -> None:
    base = compute(DESIGN_PRESET)
    better = compute(dataclasses.replace(DESIGN_PRESET, cache_hit_ratio=0.5, gated_silence_share=0.6))
    assert better.cloud_only.monthly == base.cloud_only.monthly
    assert better.hybrid.monthly < base.hybrid.monthly
    # Bedrock: 5M turns x (1 - 0.5) x $0.0004; networking: 2.5M min x 0.4 x $0.0004.
    assert better.hybrid.line("cloud_ai").amount == Decimal("1000")  # type: ignore[union-attr]
    assert better.hybrid.line("cloud_networking").amount == Decimal("400")  # type: ignore[union-attr]
    worse = compute(dataclasses.replace(DESIGN_PRESET, cache_hit_ratio=0.0, gated_silence_share=0.0))
    assert worse.saving < base.saving


def test_a_dearer_model_mix_raises_both_bills_by_the_same_llm_amount() -> None:
    base = compute(DESIGN_PRESET)
    premium = compute(dataclasses.replace(DESIGN_PRESET, model_mix={"premium": 1.0}))
    # Claude 3.7 Sonnet: 300 x $3 + 40 x $15 per 1M = $0.0015 a turn.
    assert premium.hybrid.line("cloud_ai").amount == Decimal("5625")  # type: ignore[union-attr]
    assert premium.cloud_only.line("cloud_ai").amount == Decimal("7500")  # type: ignore[union-attr]
    assert premium.hybrid.monthly > base.hybrid.monthly


def test_voice_providers_add_telephony_and_gated_stt() -> None:
    result = compute(dataclasses.replace(DESIGN_PRESET, include_voice_providers=True))
    hybrid_stt = result.hybrid.line("stt")
    cloud_stt = result.cloud_only.line("stt")
    assert hybrid_stt is not None and cloud_stt is not None
    assert cloud_stt.amount == Decimal("2500000") * Decimal("0.0077")
    assert hybrid_stt.amount == cloud_stt.amount / 2  # half the audio is gated
    telephony = result.hybrid.line("telephony")
    assert telephony is not None and telephony.quantity == 3_000_000  # 2.5 min billed as 3
    assert result.hybrid.monthly > Decimal("6070")


def test_measured_calls_become_a_scenario() -> None:
    calls = [
        (
            Usage(
                tokens={HAIKU45: TokenUse(input=3000, output=300)},
                answers={HAIKU45: 3, "faq": 1},
                audio_seconds=120,
                gated_seconds=84,
                tts_chars={"aura-2": 1200},
            ),
            2.0,
        ),
        (
            Usage(
                tokens={HAIKU45: TokenUse(input=1000, output=100)},
                answers={HAIKU45: 1, "cache": 2, "faq": 1},  # the answer cache answers at the edge too
                audio_seconds=240,
                gated_seconds=168,
                tts_chars={"aura-2": 1800, "piper": 600},  # every character spoken counts, whoever spoke it
            ),
            4.0,
        ),
    ]
    measured = measure(calls)
    scenario = measured_scenario(measured, calls_per_month=10_000)
    assert scenario.minutes_per_call == 3.0
    assert scenario.gated_silence_share == pytest.approx(0.7)
    assert scenario.cache_hit_ratio == pytest.approx(0.5)  # 4 FAQ answers, 4 LLM turns
    assert scenario.llm_turns_per_minute == pytest.approx(8 / 6)
    assert scenario.tokens_in_per_turn == 1000 and scenario.tokens_out_per_turn == 100
    assert dict(scenario.model_mix) == {HAIKU45: 1.0}
    assert scenario.tts_chars_per_minute == 600
    result = compute(scenario)
    assert result.hybrid.line("telephony") is not None
    assert result.hybrid.monthly != compute(DESIGN_PRESET).hybrid.monthly
    # Haiku 4.5 through a "us." profile: 1000 x $1.10 + 100 x $5.50 per 1M = $0.00165 a turn.
    turns = Decimal("10000") * 3 * (Decimal(8) / 6)
    ai = result.cloud_only.line("cloud_ai")
    assert ai is not None and ai.rate == Decimal("0.00165")
    assert ai.quantity == pytest.approx(turns)


def test_measured_scenario_estimates_turns_from_tokens_without_a_turn_count() -> None:
    measured = measure([(Usage(tokens={HAIKU45: TokenUse(input=900, output=60)}), 1.5)])
    scenario = measured_scenario(measured)
    assert scenario.tokens_in_per_turn == DESIGN_PRESET.tokens_in_per_turn
    assert scenario.llm_turns_per_minute == pytest.approx(3 / 1.5)


def test_format_scenario_shows_the_figures() -> None:
    text = format_scenario(compute(DESIGN_PRESET))
    for figure in ("$6,070.00", "$8,500.00", "$2,430.00", "28.6 %", "$0.00607", "$0.00850", "1,000,000"):
        assert figure in text
    assert "Edge compute (Workers)" in text and "Bandwidth (CloudFront)" in text


@pytest.mark.parametrize(
    "changes",
    [
        {"model_mix": {"economy": 0.5}},
        {"cache_hit_ratio": 1.5},
        {"gated_silence_share": -0.1},
        {"minutes_per_call": float("nan")},
        {"model_mix": {}},
    ],
)
def test_bad_inputs_are_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(DESIGN_PRESET, **changes)  # type: ignore[arg-type]


def test_scenario_accepts_model_ids_as_mix_keys() -> None:
    scenario = Scenario(
        calls_per_month=1000,
        minutes_per_call=1,
        model_mix={"anthropic.claude-3-haiku-20240307-v1:0": 1.0},
        cache_hit_ratio=0,
        gated_silence_share=0,
        llm_turns_per_minute=1,
        tokens_in_per_turn=1000,
        tokens_out_per_turn=0,
    )
    ai = compute(scenario).cloud_only.line("cloud_ai")
    assert ai is not None and ai.amount == Decimal("0.25")
