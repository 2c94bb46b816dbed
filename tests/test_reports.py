"""The command-line reports: routes, scenarios, call costs."""

from __future__ import annotations

from pathlib import Path

import anyio

from aybiza.cli import main
from aybiza.config import Settings
from aybiza.edge.calls import open_call_store
from aybiza.pipeline import CallContext
from aybiza.reports import calls_report, costs_report, route_report, scenario_report
from aybiza.routing.costs import cost_of


def test_route_of_a_uk_caller_lands_in_london_with_ordered_fallbacks() -> None:
    text = route_report("+447700900123")
    assert "eu-west-2" in text.split("<- chosen")[0].splitlines()[-1]
    assert "fallbacks: eu-central-1" in text


def test_an_eu_residency_policy_keeps_a_german_caller_in_the_eu() -> None:
    text = route_report("+4915112345678", residency="EU")
    assert "choice:    eu-central-1" in text
    assert "fallbacks: eu-west-2" in text and "us-east-1" not in text.split("fallbacks:")[1]


def test_the_design_scenario_reproduces_the_design_figures() -> None:
    text = scenario_report(Settings())
    assert "$6,070.00" in text and "$8,500.00" in text and "(28.6 %)" in text


def test_costs_and_calls_read_the_archive(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)

    async def one_call() -> None:
        store = await open_call_store(tmp_path)
        ctx = CallContext(call_id="CAcost", caller="+447700900123", region="eu-west-2")
        ctx.add_usage("tokens_in:eu.anthropic.claude-haiku-4-5-20251001-v1:0", 1000)
        ctx.add_usage("tokens_out:eu.anthropic.claude-haiku-4-5-20251001-v1:0", 100)
        cost = cost_of(ctx.usage, ctx.region, 1.0)
        await store.start_call(ctx)
        await store.end_call(ctx, "stopped", cost=cost.to_dict())
        await store.aclose()

    anyio.run(one_call)
    calls = calls_report(settings)
    assert "CAcost" in calls and "stopped" in calls
    costs = costs_report(settings)
    assert "eu-west-2" in costs and "haiku" in costs


def test_the_route_command_prints_the_table(capsys: object) -> None:
    assert main(["route", "--from", "+12125550100"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "us-east-1" in out and "<- chosen" in out
