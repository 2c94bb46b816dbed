"""Scenario files and the checks ``aybiza eval`` makes, without a server (the e2e tests place the calls)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aybiza.agents import load_agent
from aybiza.errors import ConfigError
from aybiza.evals.checks import call_checks, said_turns, turn_checks
from aybiza.evals.report import table
from aybiza.evals.runner import ScenarioResult
from aybiza.evals.scenarios import CallExpect, Scenario, Step, TurnExpect, load_scenarios

ROOT = Path(__file__).resolve().parents[2]
AGENT = load_agent("default", ROOT / "agents")
HOURS = next(faq.answer for faq in AGENT.faqs if faq.id == "opening_hours")
SCENARIO = Scenario(name="s", steps=(Step(say="hi"),))


def test_the_shipped_scenarios_cover_hours_parking_spanish_and_a_transfer() -> None:
    file = load_scenarios(ROOT / "agents" / "default.scenarios.yaml")
    names = {scenario.name for scenario in file.scenarios}
    assert names == {"opening hours", "parking", "spanish question", "speak to a person"}
    transfer = next(s for s in file.scenarios if s.name == "speak to a person")
    assert transfer.expect.transfer_to == AGENT.transfer_to
    faqs = {step.expect.faq for s in file.scenarios for step in s.steps if step.expect}
    assert faqs <= {faq.id for faq in AGENT.faqs}


@pytest.mark.parametrize("body, problem", [
    ("scenarios: []", "scenarios"),
    ("scenarios: [{name: a, steps: [{say: hi, press: '1'}]}]", "exactly one of say, press, wait"),
    ("scenarios: [{name: a, steps: [{press: '12x'}]}]", "keypad digits"),
    ("scenarios: [{name: a, steps: [{wait: 2, expect: {faq: x}}]}]", "only a say step"),
    ("scenarios: [{name: a, steps: [{say: hi, expect: {regex: '('}}]}]", "regex does not compile"),
    ("scenarios: [{name: a, steps: [{say: hi}]}, {name: a, steps: [{say: hi}]}]", "unique"),
    ("scenarios: [{name: a, steps: [{say: hi, expect: {fqa: x}}]}]", "fqa"),
])
def test_a_bad_scenario_file_is_refused_with_the_field_named(tmp_path: Path, body: str, problem: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=problem):
        load_scenarios(path)


def test_an_answer_is_judged_by_faq_words_regex_tools_and_latency() -> None:
    turn = {"user": "when are you open", "agent": HOURS, "tool_calls": []}
    good = TurnExpect(faq="opening_hours", words=("monday",), not_words=("parking",), regex=r"8 ?AM", tools=())
    checks = turn_checks(SCENARIO, 1, good, turn, 1.2, 3.0, AGENT)
    assert all(check.passed for check in checks), checks
    bad = TurnExpect(faq="parking", words=("sunday open",), regex="free", tools=("transfer",), latency_s=1.0)
    failed = {c.check for c in turn_checks(SCENARIO, 1, bad, turn, 1.2, None, AGENT) if not c.passed}
    assert failed == {"faq", "word", "regex", "tools", "latency"}


def test_latency_over_budget_is_reported_but_not_failed_when_not_judged() -> None:
    turn = {"user": "hi", "agent": "Hello.", "tool_calls": []}
    [judged] = turn_checks(SCENARIO, 1, TurnExpect(), turn, 9.0, 5.0, None)
    assert not judged.passed and judged.actual == "9.00 s"
    [reported] = turn_checks(SCENARIO, 1, TurnExpect(), turn, 9.0, 5.0, None, judge_latency=False)
    assert reported.passed and reported.actual == "9.00 s (over)"
    [missing] = turn_checks(SCENARIO, 1, TurnExpect(), None, None, 5.0, None)
    assert not missing.passed


def test_a_transfer_is_checked_in_the_record_and_in_the_twilio_api_updates() -> None:
    record = {"outcome": "transferred", "turns": [
        {"user": "", "agent": "Hello.", "tool_calls": []},
        {"user": "a person please", "agent": "Of course.",
         "tool_calls": [{"name": "transfer", "outcome": "ok"}]}]}
    expect = CallExpect(outcome="transferred", tools=("transfer",), transfer_to="+16035550142")
    dial = "<Response><Dial><Number>+16035550142</Number></Dial></Response>"
    assert all(c.passed for c in call_checks(SCENARIO, expect, record, [dial]))
    wrong = {c.check for c in call_checks(SCENARIO, expect, record, ["<Response><Hangup/></Response>"])
             if not c.passed}
    assert wrong == {"transfer (Twilio API)"}
    assert [t["user"] for t in said_turns(record)] == ["a person please"]


def test_the_table_says_which_check_failed() -> None:
    checks = turn_checks(SCENARIO, 1, TurnExpect(faq="parking"), {"user": "x", "agent": HOURS}, None, None, AGENT)
    text = table([ScenarioResult("s", "CA1", checks), ScenarioResult("down", error="RuntimeError: refused")])
    assert "faq" in text and "FAIL" in text and "0/2 scenarios passed" in text and "RuntimeError" in text
