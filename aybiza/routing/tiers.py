"""Model tiers as configuration: tier → Bedrock model or inference-profile ID.

The design names four Claude 3.x models, all retired on Bedrock; they remain
accepted as aliases of the four tiers. Each tier maps to a current base model
(overridable), and a base ID becomes a cross-Region inference profile by the
caller's Region (``us.``, ``eu.``, ``apac.``, else ``global.``). IDs that are
already qualified (a profile prefix or an ARN) are used as given. Pure
functions; nothing here talks to AWS.

Override keys are a tier or alias (``"premium"``) or a tier for one Region
(``"premium@eu-west-2"``); values are a base ID (prefixed by Region) or a
qualified ID (used as is).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

__all__ = [
    "TIERS",
    "ALIASES",
    "DEFAULT_MODELS",
    "DEFAULT_THINKING_BUDGET",
    "PROFILE_PREFIXES",
    "ProfileScope",
    "TierModel",
    "canonical_tier",
    "profile_prefix",
    "inference_profile",
    "resolve_model",
    "supports_prefill",
]

TIERS = ("premium", "advanced", "fast", "economy")
"""Model tiers, best (and dearest) first."""

ALIASES: Mapping[str, str] = {
    "claude-3-7-sonnet": "premium",
    "claude-3-5-sonnet": "advanced",
    "claude-3-5-haiku": "fast",
    "claude-3-haiku": "economy",
}
"""The design's model names, now tier names."""

DEFAULT_MODELS: Mapping[str, str] = {
    "premium": "anthropic.claude-sonnet-4-6",
    "advanced": "anthropic.claude-sonnet-4-5-20250929-v1:0",
    "fast": "anthropic.claude-haiku-4-5-20251001-v1:0",
    "economy": "anthropic.claude-haiku-4-5-20251001-v1:0",
}
"""Base model IDs per tier (successors of the retired Claude 3.x models)."""

DEFAULT_THINKING_BUDGET = 1024
"""Extended-thinking budget (tokens) on the premium tier; Bedrock's minimum."""

PROFILE_PREFIXES = ("us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.")
"""Prefixes that mark an ID as an inference profile already."""

ProfileScope = Literal["geo", "global", "none"]


@dataclass(frozen=True, slots=True)
class TierModel:
    """The model a tier resolves to in one Region."""

    tier: str
    model_id: str
    thinking_budget: int | None


_CLAUDE_VERSION = re.compile(r"claude-(?:opus|sonnet|haiku)-(\d+)-(\d+)(?:-|$)")


def supports_prefill(model_id: str) -> bool:
    """Whether the model continues an assistant message (a prefill); Claude 4.6 and later answer 400.

    Anthropic's migration guide: prefilling assistant messages is an error from
    Sonnet 4.6 and Opus 4.6 on ("the conversation must end with a user
    message"). Ids this cannot read are treated as not supporting it.
    """
    found = _CLAUDE_VERSION.search(model_id)
    if found is None:
        return False
    major, minor = found.group(1), found.group(2)
    version = (int(major), 0 if len(minor) > 2 else int(minor))  # claude-sonnet-4-20250514: 4.0 and a date
    return version < (4, 6)


def canonical_tier(name: str) -> str:
    """``premium``/``advanced``/``fast``/``economy`` for a tier, an alias or an old Claude 3.x ID."""
    key = name.strip().lower()
    if key in TIERS:
        return key
    if key in ALIASES:
        return ALIASES[key]
    bare = _strip_prefix(key).removeprefix("anthropic.")
    for alias in sorted(ALIASES, key=len, reverse=True):
        if bare.startswith(alias):
            return ALIASES[alias]
    raise ConfigError(
        f"unknown model tier {name!r}; expected one of {', '.join(TIERS)} or {', '.join(ALIASES)}"
    )


def profile_prefix(region: str) -> str:
    """The cross-Region inference-profile geography of a Region: us, eu, apac or global."""
    r = region.strip().lower()
    if r.startswith("us-gov-"):
        return "us-gov"
    if r.startswith("us-"):
        return "us"
    if r.startswith("eu-"):
        return "eu"
    if r.startswith("ap-"):
        return "apac"
    return "global"


def inference_profile(model_id: str, region: str, scope: ProfileScope = "geo") -> str:
    """``model_id`` as the inference profile to call from ``region``; qualified IDs pass unchanged."""
    if _is_qualified(model_id) or scope == "none":
        return model_id
    prefix = "global" if scope == "global" else profile_prefix(region)
    return f"{prefix}.{model_id}"


def resolve_model(
    tier: str,
    region: str,
    overrides: Mapping[str, str] | None = None,
    *,
    scope: ProfileScope = "geo",
    thinking: bool | None = None,
    thinking_budget: int = DEFAULT_THINKING_BUDGET,
) -> TierModel:
    """The model ID (and thinking budget) for ``tier`` in ``region``.

    ``thinking`` defaults to on for the premium tier only.
    """
    name = canonical_tier(tier)
    chosen = _override(name, region, overrides or {}) or DEFAULT_MODELS[name]
    use_thinking = (name == "premium") if thinking is None else thinking
    if use_thinking and thinking_budget < 1024:
        raise ConfigError(f"thinking budget must be at least 1024 tokens, not {thinking_budget}")
    return TierModel(
        name, inference_profile(chosen, region, scope), thinking_budget if use_thinking else None
    )


def _override(tier: str, region: str, overrides: Mapping[str, str]) -> str | None:
    regional: str | None = None
    general: str | None = None
    for key, value in overrides.items():
        base, _, where = key.partition("@")
        if canonical_tier(base) != tier:
            continue
        if where:
            if where.strip().lower() == region.strip().lower():
                regional = value.strip()
        else:
            general = value.strip()
    chosen = regional or general
    if chosen is not None and not chosen:
        raise ConfigError(f"empty model id for tier {tier!r}")
    return chosen


def _is_qualified(model_id: str) -> bool:
    lower = model_id.lower()
    return lower.startswith("arn:") or lower.startswith(PROFILE_PREFIXES)


def _strip_prefix(model_id: str) -> str:
    for prefix in PROFILE_PREFIXES:
        if model_id.startswith(prefix):
            return model_id[len(prefix) :]
    return model_id
