"""The scenario file ``aybiza eval`` runs.

::

    agent: default                       # the agent every scenario calls (a scenario may name another)
    latency_s: 5                         # default budget per turn: end of the caller's speech -> first reply audio
    scenarios:
      - name: opening hours
        caller: "+15555550123"           # the number calling (its country sets the language prior)
        steps:
          - say: What are your opening hours?
            expect: {faq: opening_hours, words: [monday], regex: "8 ?AM", latency_s: 4}
          - press: "1234#"               # keypad digits (DTMF events on the stream)
          - wait: 3                      # silence, seconds
        expect: {outcome: hangup, tools: [], transfer_to: null}

A ``say`` is spoken by a synthetic voice (espeak-ng, ``language`` of the
scenario or the step), then the caller listens until the agent is quiet.
Expectations of a ``say`` are checked against the agent's answer to it in
the call record (the n-th ``say`` is the n-th turn with caller words) and
the caller's own latency measurement; those of the scenario against the
whole record and, when the eval runs its own server, the fake Twilio REST API.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError

__all__ = ["CallExpect", "Scenario", "ScenarioFile", "Step", "TurnExpect", "load_scenarios"]

_DTMF = re.compile(r"^[0-9*#A-D]{1,32}$")


class TurnExpect(BaseModel):
    """What the agent's answer to one ``say`` must be."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    faq: str | None = None  # the FAQ entry answered (its answer, in any language the agent speaks)
    words: tuple[str, ...] = ()  # every one in the answer (case-insensitive, whole words)
    not_words: tuple[str, ...] = ()  # none of them in the answer
    regex: str | None = None  # searched in the answer (case-insensitive)
    tools: tuple[str, ...] | None = None  # the tool calls (names) this turn made, in order; [] none
    latency_s: float | None = Field(default=None, gt=0)  # budget; default the file's latency_s

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"regex does not compile: {error}") from None
        return value


class Step(BaseModel):
    """One thing the caller does: ``say`` words, ``press`` keys, or ``wait`` seconds in silence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    say: str | None = None
    press: str | None = None
    wait: float | None = Field(default=None, gt=0, le=120)
    language: str | None = None  # the voice's language for this ``say``
    expect: TurnExpect | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Self:
        if sum(value is not None for value in (self.say, self.press, self.wait)) != 1:
            raise ValueError("a step is exactly one of say, press, wait")
        if self.expect is not None and self.say is None:
            raise ValueError("only a say step has expectations")
        if self.press is not None and not _DTMF.fullmatch(self.press):
            raise ValueError("press takes keypad digits: 0-9, *, #, A-D")
        if self.say is not None and not self.say.strip():
            raise ValueError("say needs words")
        return self


class CallExpect(BaseModel):
    """What the whole call must show."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: str | None = None  # the end reason (hangup, transferred, agent_ended ...)
    tools: tuple[str, ...] | None = None  # every tool call of the call (names), in order; [] none
    transfer_to: str | None = None  # the number or SIP URI the call was transferred to


class Scenario(BaseModel):
    """One scripted call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=120)
    agent: str | None = None
    caller: str = "+15555550123"
    language: str = "en"
    greeting_s: float = Field(default=20.0, gt=0, le=120)  # how long the caller listens to the greeting at most
    reply_s: float = Field(default=30.0, gt=0, le=120)  # how long it listens after each say at most
    steps: tuple[Step, ...] = Field(min_length=1)
    expect: CallExpect = CallExpect()


class ScenarioFile(BaseModel):
    """A file of scenarios and their defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str | None = None
    latency_s: float | None = Field(default=None, gt=0)
    scenarios: tuple[Scenario, ...] = Field(min_length=1)

    @field_validator("scenarios")
    @classmethod
    def _unique(cls, value: tuple[Scenario, ...]) -> tuple[Scenario, ...]:
        names = [scenario.name for scenario in value]
        if len(set(names)) != len(names):
            raise ValueError("scenario names must be unique")
        return value


def load_scenarios(path: Path) -> ScenarioFile:
    """Read and check a scenario file; a :class:`ConfigError` naming the file and the field otherwise."""
    try:
        data: Any = yaml.safe_load(path.read_text())
        return ScenarioFile.model_validate(data)
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not YAML: {error}") from error
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"{path}: {problems}") from error
