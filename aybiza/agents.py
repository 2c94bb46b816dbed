"""Agent configuration: who the voice agent is and what it knows.

An agent is one YAML file, ``<directory>/<agent id>.yaml``: its greeting, a
system prompt for real language models, the FAQ the embedded responder
answers from, and what to say when nothing matches or the line is bad. The
models are frozen pydantic models; a bad file is a :class:`ConfigError` that
names the file and the field.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

__all__ = ["FAQ", "AgentConfig", "load_agent", "list_agents", "AGENT_ID_PATTERN"]

AGENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""Agent ids are plain names: letters, digits, ``_`` and ``-`` (no path separators, no dots)."""

_DEFAULT_REPROMPT = "Sorry, the line is bad — could you move somewhere quieter and say that again?"


def _non_blank(value: str, what: str) -> str:
    text = value.strip()
    if not text:
        raise ValueError(f"{what} must not be blank")
    return text


class FAQ(BaseModel):
    """One answer and the ways a caller may ask for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    answer: str
    questions: tuple[str, ...] = Field(min_length=1)

    @field_validator("answer")
    @classmethod
    def _answer_not_blank(cls, value: str) -> str:
        return _non_blank(value, "answer")

    @field_validator("questions")
    @classmethod
    def _questions_not_blank(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_non_blank(q, "a question") for q in value)


class AgentConfig(BaseModel):
    """A voice agent: persona, prompts and the FAQ it can answer without a model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    greeting: str
    system_prompt: str
    language: str = "en"
    voice: str = "piper:joe"
    faqs: tuple[FAQ, ...] = ()
    fallback: str
    reprompt: str = _DEFAULT_REPROMPT
    cache_answers: bool = True
    match_threshold: float = Field(default=0.5, ge=-1.0, le=1.0)
    residency: str | None = None
    cost_budget_usd: float | None = Field(default=None, ge=0.0)

    @field_validator("id")
    @classmethod
    def _id_is_plain(cls, value: str) -> str:
        if not AGENT_ID_PATTERN.fullmatch(value):
            raise ValueError("agent id may only contain letters, digits, '_' and '-'")
        return value

    @field_validator("greeting", "fallback", "reprompt", "name")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        return _non_blank(value, "this field")

    @field_validator("faqs")
    @classmethod
    def _faq_ids_unique(cls, value: tuple[FAQ, ...]) -> tuple[FAQ, ...]:
        seen: set[str] = set()
        for faq in value:
            if faq.id in seen:
                raise ValueError(f"duplicate FAQ id {faq.id!r}")
            seen.add(faq.id)
        return value


def _agent_path(agent_id: str, directory: Path) -> Path:
    if not AGENT_ID_PATTERN.fullmatch(agent_id):
        raise ConfigError(f"invalid agent id {agent_id!r}: use letters, digits, '_' and '-' only")
    return Path(directory) / f"{agent_id}.yaml"


def load_agent(agent_id: str, directory: Path) -> AgentConfig:
    """Read ``<directory>/<agent_id>.yaml``; raise ConfigError naming the file on any problem."""
    path = _agent_path(agent_id, directory)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"agent {agent_id!r}: no file {path}") from None
    except OSError as exc:
        raise ConfigError(f"agent {agent_id!r}: cannot read {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of agent fields, got {type(data).__name__}")
    data.setdefault("id", agent_id)
    if data["id"] != agent_id:
        raise ConfigError(f"{path}: id {data['id']!r} does not match the file name {agent_id!r}")
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid agent config: {exc}") from exc


def list_agents(directory: Path) -> list[str]:
    """Ids of the agent files in ``directory`` (sorted; names that are not valid ids are skipped)."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if p.is_file() and AGENT_ID_PATTERN.fullmatch(p.stem))
