"""Model choice: which tier answers a call, from audio quality, language and budget.

The design's table, as a pure function:

==================  ==========  =====================
audio quality       language    tier
==================  ==========  =====================
high                English     premium + extended thinking
high                other       advanced
medium              any         fast
low                 any         economy
==================  ==========  =====================

The wanted tier is then fitted to the tiers the region serves (the next cheaper one
it has, else the next dearer) and stepped down when the call's cost nears or passes
its budget. Tier names are ``premium > advanced > fast > economy``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aybiza.errors import ConfigError
from aybiza.routing.regions import KNOWN_TIERS

__all__ = ["QUALITY_TIERS", "ModelChoice", "wanted_tier", "choose_model"]

QUALITY_TIERS = ("high", "medium", "low")
"""Audio quality grades the quality processor reports."""


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The tier to use, whether to turn on extended thinking, and why."""

    tier: str
    thinking: bool
    reason: str


def wanted_tier(quality_tier: str, language: str) -> tuple[str, bool]:
    """The design's table: ``(tier, thinking)`` for an audio quality grade and a language."""
    quality = quality_tier.lower()
    if quality == "high":
        if _is_english(language):
            return "premium", True
        return "advanced", False
    if quality == "medium":
        return "fast", False
    if quality == "low":
        return "economy", False
    raise ValueError(f"unknown quality tier {quality_tier!r}; expected one of {', '.join(QUALITY_TIERS)}")


def choose_model(
    quality_tier: str,
    language: str,
    region_tiers: Iterable[str],
    cost_so_far: float = 0.0,
    budget: float | None = None,
    *,
    soft_budget_fraction: float = 0.8,
) -> ModelChoice:
    """Pick the tier for the next turn.

    Past ``soft_budget_fraction`` of ``budget`` the wanted tier drops one step and
    thinking is off; at or past the budget the region's cheapest tier is used.
    """
    available = [tier for tier in KNOWN_TIERS if tier in set(region_tiers)]
    if not available:
        raise ConfigError("the region serves no known model tier")
    tier, thinking = wanted_tier(quality_tier, language)
    reasons = [f"{quality_tier.lower()} quality, {'English' if _is_english(language) else language}: {tier}"]

    if budget is not None and cost_so_far >= budget:
        cheapest = available[-1]
        return ModelChoice(cheapest, False, f"cost {cost_so_far:.4f} reached budget {budget:.4f}: {cheapest}")
    if budget is not None and cost_so_far >= soft_budget_fraction * budget:
        index = min(KNOWN_TIERS.index(tier) + 1, len(KNOWN_TIERS) - 1)
        if KNOWN_TIERS[index] != tier:
            tier = KNOWN_TIERS[index]
            reasons.append(f"cost {cost_so_far:.4f} past {soft_budget_fraction:.0%} of budget: {tier}")
        thinking = False

    fitted = _fit(tier, available)
    if fitted != tier:
        reasons.append(f"region lacks {tier}: {fitted}")
    return ModelChoice(fitted, thinking and fitted == "premium", "; ".join(reasons))


def _fit(tier: str, available: list[str]) -> str:
    """The wanted tier if offered, else the next cheaper one, else the next dearer one."""
    index = KNOWN_TIERS.index(tier)
    for candidate in KNOWN_TIERS[index:]:
        if candidate in available:
            return candidate
    for candidate in reversed(KNOWN_TIERS[:index]):
        if candidate in available:
            return candidate
    raise ConfigError("the region serves no known model tier")  # unreachable: available is non-empty


def _is_english(language: str) -> bool:
    return language.lower().replace("_", "-").split("-")[0] == "en"
