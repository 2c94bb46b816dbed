"""Each expectation of a scenario against what the call produced.

The answer a turn is judged by is the agent's text in the call record (what
the agent said, as the server recorded it), read through the API; the FAQ
entry is recognised by its answer's text in any language the agent speaks.
Latency is the caller's own measurement: from the end of its speech to the
first reply audio it received, as a phone would feel it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from ..agents import AgentConfig
from .scenarios import CallExpect, Scenario, TurnExpect

__all__ = ["Check", "call_checks", "said_turns", "turn_checks"]

_WORDS = re.compile(r"\W+")


@dataclass(frozen=True)
class Check:
    """One expectation: what was expected, what was found, and whether they agree."""

    scenario: str
    turn: int | None  # 1-based index of the ``say`` step; None for the whole call
    check: str
    expected: str
    actual: str
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        """For the JSON report."""
        return asdict(self)


def _normal(text: str) -> str:
    return " " + _WORDS.sub(" ", text.lower()).strip() + " "


def said_turns(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's turns in which the caller said something (the n-th answers the n-th ``say``)."""
    return [turn for turn in record.get("turns", []) if str(turn.get("user", "")).strip()]


def _tool_names(turns: list[dict[str, Any]]) -> list[str]:
    return [str(call.get("name")) for turn in turns for call in turn.get("tool_calls", [])]


def _faq_answered(answer: str, agent: AgentConfig | None) -> str:
    if agent is None:
        return "?"
    spoken = _normal(answer)
    for language in agent.languages:
        for faq in agent.faqs_in(language):
            if _normal(faq.answer).strip() and _normal(faq.answer) in spoken:
                return faq.id
    return "none"


def turn_checks(scenario: Scenario, index: int, expect: TurnExpect, turn: dict[str, Any] | None,
                latency: float | None, budget: float | None, agent: AgentConfig | None, *,
                judge_latency: bool = True) -> list[Check]:
    """The checks of the ``index``-th ``say`` (1-based) against its turn in the record and its latency.

    Without ``judge_latency`` the latency is reported against its budget but always passes.
    """
    name = scenario.name

    def check(what: str, expected: str, actual: str, passed: bool) -> Check:
        return Check(name, index, what, expected, actual, passed)

    if turn is None:
        return [check("answered", "a turn in the record", "none (the caller's words were not heard)", False)]
    answer = str(turn.get("agent", ""))
    checks: list[Check] = []
    spoken = _normal(answer)
    if expect.faq is not None:
        found = _faq_answered(answer, agent)
        checks.append(check("faq", expect.faq, found, found == expect.faq))
    for word in expect.words:
        checks.append(check("word", word, answer[:80], _normal(word) in spoken))
    for word in expect.not_words:
        checks.append(check("not word", word, answer[:80], _normal(word) not in spoken))
    if expect.regex is not None:
        match = re.search(expect.regex, answer, re.IGNORECASE)
        checks.append(check("regex", expect.regex, match.group(0) if match else answer[:80], match is not None))
    if expect.tools is not None:
        names = _tool_names([turn])
        checks.append(check("tools", ",".join(expect.tools) or "none", ",".join(names) or "none",
                            names == list(expect.tools)))
    limit = expect.latency_s or budget
    if limit is not None:
        got = "no reply" if latency is None else f"{latency:.2f} s"
        within = latency is not None and latency <= limit
        if judge_latency:
            checks.append(check("latency", f"<= {limit:g} s", got, within))
        else:
            checks.append(check("latency (not judged)", f"<= {limit:g} s", got + ("" if within else " (over)"), True))
    return checks


def call_checks(scenario: Scenario, expect: CallExpect, record: dict[str, Any],
                transfers: list[str] | None) -> list[Check]:
    """The whole call's checks: outcome, tool calls, transfer (record, and the fake Twilio's updates if known)."""
    name = scenario.name
    checks: list[Check] = []
    if expect.outcome is not None:
        outcome = str(record.get("outcome"))
        checks.append(Check(name, None, "outcome", expect.outcome, outcome, outcome == expect.outcome))
    if expect.tools is not None:
        names = _tool_names(record.get("turns", []))
        checks.append(Check(name, None, "tools", ",".join(expect.tools) or "none", ",".join(names) or "none",
                            names == list(expect.tools)))
    if expect.transfer_to is not None:
        done = [call for turn in record.get("turns", []) for call in turn.get("tool_calls", [])
                if call.get("name") in ("transfer", "warm_transfer") and call.get("outcome") == "ok"]
        checks.append(Check(name, None, "transfer (record)", "ok", "ok" if done else "none", bool(done)))
        if transfers is not None:
            target = expect.transfer_to
            dialled = [twiml for twiml in transfers if f">{target}<" in twiml]
            checks.append(Check(name, None, "transfer (Twilio API)", f"<Dial> {target}",
                                dialled[0][:80] if dialled else (transfers[0][:80] if transfers else "no update"),
                                bool(dialled)))
    return checks
