"""Model tiers as configuration: aliases, current defaults, inference profiles by Region, overrides."""

from __future__ import annotations

import pytest

from aybiza.errors import ConfigError
from aybiza.routing.tiers import (
    DEFAULT_MODELS,
    TIERS,
    canonical_tier,
    inference_profile,
    profile_prefix,
    resolve_model,
)


@pytest.mark.parametrize(
    ("name", "tier"),
    [
        ("claude-3-7-sonnet", "premium"),
        ("claude-3-5-sonnet", "advanced"),
        ("claude-3-5-haiku", "fast"),
        ("claude-3-haiku", "economy"),
        ("Premium", "premium"),
        ("eu.anthropic.claude-3-7-sonnet-20250219-v1:0", "premium"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "advanced"),
        ("anthropic.claude-3-haiku-20240307-v1:0", "economy"),
    ],
)
def test_the_designs_model_names_are_aliases_of_tiers(name: str, tier: str) -> None:
    assert canonical_tier(name) == tier


def test_an_unknown_tier_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown model tier"):
        canonical_tier("gpt-9")


def test_defaults_are_current_models_not_the_retired_ones() -> None:
    assert set(DEFAULT_MODELS) == set(TIERS)
    assert all("claude-3" not in model for model in DEFAULT_MODELS.values())
    assert resolve_model("claude-3-7-sonnet", "us-east-1").model_id == "us.anthropic.claude-sonnet-4-6"
    assert resolve_model("fast", "eu-west-2").model_id == "eu.anthropic.claude-haiku-4-5-20251001-v1:0"


@pytest.mark.parametrize(
    ("region", "prefix"),
    [
        ("us-east-1", "us"),
        ("us-west-2", "us"),
        ("eu-west-2", "eu"),
        ("eu-central-1", "eu"),
        ("ap-southeast-1", "apac"),
        ("ap-northeast-1", "apac"),
        ("sa-east-1", "global"),
        ("ca-central-1", "global"),
    ],
)
def test_base_ids_become_inference_profiles_of_the_callers_geography(region: str, prefix: str) -> None:
    assert profile_prefix(region) == prefix
    assert inference_profile("anthropic.claude-haiku-4-5-20251001-v1:0", region) == (
        f"{prefix}.anthropic.claude-haiku-4-5-20251001-v1:0"
    )


def test_qualified_ids_and_other_scopes() -> None:
    arn = "arn:aws:bedrock:eu-west-2:123456789012:inference-profile/eu.anthropic.claude-sonnet-4-6"
    assert inference_profile(arn, "us-east-1") == arn
    assert (
        inference_profile("eu.anthropic.claude-sonnet-4-6", "us-east-1") == "eu.anthropic.claude-sonnet-4-6"
    )
    assert inference_profile("anthropic.claude-sonnet-4-6", "eu-west-2", "global") == (
        "global.anthropic.claude-sonnet-4-6"
    )
    assert inference_profile("anthropic.claude-3-haiku-20240307-v1:0", "eu-west-2", "none") == (
        "anthropic.claude-3-haiku-20240307-v1:0"
    )


def test_any_id_can_be_set_by_tier_alias_or_tier_in_one_region() -> None:
    overrides = {
        "claude-3-5-haiku": "anthropic.my-fast-model-v1:0",
        "economy@eu-west-2": "anthropic.claude-3-haiku-20240307-v1:0",
        "premium@ap-southeast-1": "apac.anthropic.claude-sonnet-4-5-20250929-v1:0",
    }
    assert resolve_model("fast", "us-east-1", overrides).model_id == "us.anthropic.my-fast-model-v1:0"
    assert resolve_model("economy", "eu-west-2", overrides, scope="none").model_id == (
        "anthropic.claude-3-haiku-20240307-v1:0"
    )
    assert resolve_model("economy", "us-east-1", overrides).model_id == DEFAULT_MODELS["economy"].replace(
        "anthropic.", "us.anthropic.", 1
    )
    assert resolve_model("premium", "ap-southeast-1", overrides).model_id == (
        "apac.anthropic.claude-sonnet-4-5-20250929-v1:0"
    )


def test_thinking_is_on_for_premium_only_unless_asked() -> None:
    assert resolve_model("premium", "us-east-1").thinking_budget == 1024
    assert resolve_model("advanced", "us-east-1").thinking_budget is None
    assert resolve_model("premium", "us-east-1", thinking=False).thinking_budget is None
    assert resolve_model("fast", "us-east-1", thinking=True, thinking_budget=2048).thinking_budget == 2048
    with pytest.raises(ConfigError):
        resolve_model("premium", "us-east-1", thinking_budget=512)
