"""Places each scenario's call through the Twilio-like caller and checks it.

The caller (:func:`aybiza.testing.caller.place_call`) posts the signed voice
webhook, streams real-time μ-law, plays the agent's audio back and measures
latency; afterwards the call's record is read over the API with the bearer
token (waiting for it to be archived), and, when the eval runs its own
server, the fake Twilio REST API says which call updates (transfers) it got.
Scenarios run one after another: each latency is measured on a quiet server.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import httpx

from ..agents import AgentConfig, load_agent
from ..errors import AybizaError
from ..testing.caller import CallReport, Press, Say, Script, Wait, caller_speech, place_call
from ..transports.urls import media_stream_url
from .checks import Check, call_checks, said_turns, turn_checks
from .scenarios import Scenario, ScenarioFile, TurnExpect

if TYPE_CHECKING:
    from ..testing.fake_twilio import FakeTwilio

__all__ = ["ScenarioResult", "Target", "run_scenarios"]

_RECORD_WAIT_S = 20.0
_NO_EXPECT = TurnExpect()


@dataclass
class Target:
    """The server the calls go to and how to talk to it."""

    url: str  # http(s)://host:port
    auth_token: str  # Twilio auth token the server checks signatures with
    api_token: str  # bearer token of /api/calls
    public_url: str | None = None  # the URL the server signs against (default: url)
    agents_dir: Path | None = None  # agent files, to recognise FAQ answers
    twilio: FakeTwilio | None = None  # the fake REST API the server's call control uses, when ours
    account_sid: str | None = None  # the account the server expects (its TWILIO_ACCOUNT_SID), if it checks one

    @property
    def stream_url(self) -> str:
        """The Media Stream URL."""
        return media_stream_url(self.url)


@dataclass
class ScenarioResult:
    """One scenario's call and its checks."""

    name: str
    call_id: str = ""
    checks: list[Check] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Every check passed and nothing went wrong."""
        return not self.error and bool(self.checks) and all(check.passed for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """For the JSON report."""
        return {"name": self.name, "passed": self.passed, "call_id": self.call_id, "error": self.error,
                "seconds": round(self.seconds, 2), "turns": self.turns,
                "checks": [check.as_dict() for check in self.checks]}


async def _script(scenario: Scenario) -> Script:
    steps: list[Say | Wait | Press] = [Wait(scenario.greeting_s)]
    for step in scenario.steps:
        if step.say is not None:
            speak = functools.partial(caller_speech, step.say, language=step.language or scenario.language)
            audio = await anyio.to_thread.run_sync(speak)
            steps += [Say(audio), Wait(scenario.reply_s)]
        elif step.press is not None:
            steps.append(Press(step.press))
        elif step.wait is not None:
            steps.append(Wait(step.wait, until_idle=False))
    return steps


async def _record(target: Target, call_id: str) -> dict[str, Any]:
    """The call's record once it is no longer active (the server archives it as the call ends)."""
    deadline = time.monotonic() + _RECORD_WAIT_S
    headers = {"Authorization": f"Bearer {target.api_token}"}
    async with httpx.AsyncClient(base_url=target.url, timeout=10) as client:
        while True:
            response = await client.get(f"/api/calls/{call_id}", headers=headers)
            if response.status_code == 200:
                record: dict[str, Any] = response.json()
                if record.get("status") != "active":
                    return record
            elif response.status_code != 404:
                raise AybizaError(f"GET /api/calls/{call_id} answered {response.status_code}")
            if time.monotonic() > deadline:
                raise AybizaError(f"call {call_id} has no ended record after {_RECORD_WAIT_S:g} s")
            await anyio.sleep(0.25)


def _agent(target: Target, agent_id: str) -> AgentConfig | None:
    if target.agents_dir is None:
        return None
    try:
        return load_agent(agent_id, target.agents_dir)
    except AybizaError:
        return None


async def run_scenario(target: Target, file: ScenarioFile, scenario: Scenario, *,
                       judge_latency: bool = True) -> ScenarioResult:
    """Call, then check every expectation; an error (server gone, no record) fails the scenario."""
    result = ScenarioResult(scenario.name)
    started = time.monotonic()
    agent_id = scenario.agent or file.agent or "default"
    try:
        script = await _script(scenario)
        report: CallReport = await place_call(
            target.stream_url, script, auth_token=target.auth_token, public_url=target.public_url or target.url,
            caller=scenario.caller, agent=scenario.agent or file.agent, hangup_after=1.0, call_timeout=300,
            account_sid=target.account_sid)
        result.call_id = report.call_sid
        record = await _record(target, report.call_sid)
    except (AybizaError, OSError, RuntimeError, httpx.HTTPError) as error:
        result.error = f"{type(error).__name__}: {error}"
        result.seconds = time.monotonic() - started
        return result
    agent = _agent(target, agent_id)
    turns = said_turns(record)
    says = [step for step in scenario.steps if step.say is not None]
    for index, step in enumerate(says, 1):
        turn = turns[index - 1] if index <= len(turns) else None
        latency = report.turns[index - 1].latency if index <= len(report.turns) else None
        result.turns.append({"say": step.say, "heard_as": turn.get("user") if turn else None,
                             "answer": turn.get("agent") if turn else None,
                             "latency_s": None if latency is None else round(latency, 3)})
        if step.expect is not None:
            result.checks += turn_checks(scenario, index, step.expect, turn, latency, file.latency_s, agent,
                                         judge_latency=judge_latency)
        elif file.latency_s is not None:
            result.checks += turn_checks(scenario, index, _NO_EXPECT, turn, latency, file.latency_s, agent,
                                         judge_latency=judge_latency)
    transfers = None
    if target.twilio is not None:
        transfers = [update.twiml for update in target.twilio.updates if update.call_sid == report.call_sid]
    result.checks += call_checks(scenario, scenario.expect, record, transfers)
    if not result.checks:
        result.checks.append(Check(scenario.name, None, "ended", "a record", str(record.get("outcome")), True))
    result.seconds = time.monotonic() - started
    return result


async def run_scenarios(target: Target, file: ScenarioFile, *, only: set[str] | None = None,
                        judge_latency: bool = True, parallel: int = 1) -> list[ScenarioResult]:
    """Every scenario of ``file`` (or those named in ``only``), ``parallel`` calls at a time, in the file's order.

    Calls side by side are what a server meets anyway; more than a few at once on a small
    machine measure the machine, not the agent (latency budgets are judged per call).
    """
    chosen = [scenario for scenario in file.scenarios if only is None or scenario.name in only]
    results: list[ScenarioResult | None] = [None] * len(chosen)
    gate = anyio.Semaphore(max(1, parallel))

    async def one(index: int, scenario: Scenario) -> None:
        async with gate:
            results[index] = await run_scenario(target, file, scenario, judge_latency=judge_latency)

    async with anyio.create_task_group() as tg:
        for index, scenario in enumerate(chosen):
            tg.start_soon(one, index, scenario)
    return [result for result in results if result is not None]
