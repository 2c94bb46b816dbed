"""Model choice follows the design's table, fits the region, and respects the budget."""

from __future__ import annotations

import pytest

from aybiza.errors import ConfigError
from aybiza.routing.models import choose_model, wanted_tier

ALL = ("premium", "advanced", "fast", "economy")
MID = ("advanced", "fast")  # us-west-2, eu-central-1
ECONOMY = ("economy",)  # ap-southeast-1


@pytest.mark.parametrize(
    ("quality", "language", "tiers", "tier", "thinking"),
    [
        # the design's own table, in a region that has everything
        ("high", "en", ALL, "premium", True),
        ("high", "en-GB", ALL, "premium", True),
        ("high", "de", ALL, "advanced", False),
        ("high", "es-MX", ALL, "advanced", False),
        ("medium", "en", ALL, "fast", False),
        ("medium", "fr", ALL, "fast", False),
        ("low", "en", ALL, "economy", False),
        ("LOW", "ja", ALL, "economy", False),
        # constrained to what the region serves: next cheaper, else next dearer
        ("high", "en", MID, "advanced", False),
        ("high", "de", MID, "advanced", False),
        ("low", "en", MID, "fast", False),
        ("high", "en", ECONOMY, "economy", False),
        ("medium", "en", ("premium",), "premium", False),
    ],
)
def test_design_table(quality: str, language: str, tiers: tuple[str, ...], tier: str, thinking: bool) -> None:
    choice = choose_model(quality, language, tiers)
    assert (choice.tier, choice.thinking) == (tier, thinking)
    assert choice.reason


@pytest.mark.parametrize(
    ("cost", "budget", "tier", "thinking"),
    [
        (0.10, 1.00, "premium", True),  # well within budget
        (0.79, 1.00, "premium", True),
        (0.80, 1.00, "advanced", False),  # past 80 %: one step down, no thinking
        (0.99, 1.00, "advanced", False),
        (1.00, 1.00, "economy", False),  # budget reached: cheapest the region has
        (5.00, 1.00, "economy", False),
        (5.00, None, "premium", True),  # no budget set
    ],
)
def test_budget_downgrades(cost: float, budget: float | None, tier: str, thinking: bool) -> None:
    choice = choose_model("high", "en", ALL, cost_so_far=cost, budget=budget)
    assert (choice.tier, choice.thinking) == (tier, thinking)


def test_budget_exceeded_in_a_mid_tier_region_uses_its_cheapest() -> None:
    assert choose_model("high", "en", MID, cost_so_far=2.0, budget=1.0).tier == "fast"


def test_wanted_tier_rejects_unknown_quality() -> None:
    assert wanted_tier("high", "en") == ("premium", True)
    with pytest.raises(ValueError, match="unknown quality"):
        wanted_tier("superb", "en")


def test_region_without_tiers_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        choose_model("high", "en", ())
