"""Tests for the price table: model id forms, dated prices, regional premiums, loading."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from aybiza.errors import ConfigError
from aybiza.routing.prices import UnknownPriceError, default_prices, load_prices, split_model_id

HAIKU3 = "anthropic.claude-3-haiku-20240307-v1:0"
HAIKU45 = "anthropic.claude-haiku-4-5-20251001-v1:0"
SONNET35 = "anthropic.claude-3-5-sonnet-20241022-v2:0"


def test_profile_prefix_and_arn_cost_the_same_as_the_bare_model() -> None:
    table = default_prices()
    forms = [
        HAIKU3,
        f"us.{HAIKU3}",
        f"eu.{HAIKU3}",
        f"apac.{HAIKU3}",
        f"arn:aws:bedrock:eu-central-1:123456789012:inference-profile/eu.{HAIKU3}",
    ]
    prices = {table.token_price(form, "eu-central-1").price for form in forms}
    assert len(prices) == 1
    (price,) = prices
    assert (price.input_per_mtok, price.output_per_mtok) == (Decimal("0.25"), Decimal("1.25"))


def test_split_model_id() -> None:
    prefixes = ["us", "eu", "apac", "global"]
    assert split_model_id(f"eu.{HAIKU3}", prefixes) == ("eu", HAIKU3)
    assert split_model_id(HAIKU3, prefixes) == ("", HAIKU3)
    assert split_model_id(f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU3}", prefixes) == ("", HAIKU3)


def test_regional_endpoint_costs_ten_percent_more_than_global_for_4x_models() -> None:
    table = default_prices()
    global_price = table.token_price(f"global.{HAIKU45}", "ap-southeast-1").price
    regional = table.token_price(f"us.{HAIKU45}", "us-east-1").price
    assert global_price.input_per_mtok == Decimal("1.00")
    assert regional.input_per_mtok == Decimal("1.10")
    assert regional.output_per_mtok == Decimal("5.50")


def test_dated_price_change_and_end_of_life_note() -> None:
    table = default_prices()
    before = table.token_price(SONNET35, "us-west-2", on=date(2025, 11, 30))
    after = table.token_price(SONNET35, "us-west-2", on=date(2025, 12, 1))
    assert before.price.input_per_mtok == Decimal("3.00")
    assert after.price.input_per_mtok == Decimal("6.00")
    assert after.price.output_per_mtok == Decimal("30.00")
    late = table.token_price(SONNET35, "us-west-2", on=date(2026, 5, 1))
    assert any("end of life" in note for note in late.notes)


@pytest.mark.parametrize(
    "bad",
    [
        "as_of: 2026-01-01\nbedrock: {unknown_model: {input: -1, output: 1}}\n",
        "as_of: someday\nbedrock: {unknown_model: {input: 1, output: 1}}\n",
        "as_of: 2026-01-01\nbedrock: {unknown_model: {input: 1}}\n",
        "as_of: [2026\n",
    ],
)
def test_bad_price_tables_are_config_errors(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(bad)
    with pytest.raises(ConfigError):
        load_prices(path)


def test_packaged_table_is_dated_and_has_every_provider() -> None:
    table = default_prices()
    assert table.as_of == date(2026, 11, 26)
    assert table.stt_rate() == Decimal("0.0077")
    assert table.stt_rate("nova-3-multilingual") == Decimal("0.0092")
    assert table.tts_rate() == Decimal("0.030")
    assert table.voice_rate() == Decimal("0.0085")
    assert table.media_streams_per_minute == Decimal("0.0044")
    with pytest.raises(UnknownPriceError):
        table.stt_rate("whisper-large")
