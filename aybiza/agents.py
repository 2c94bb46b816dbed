"""Agent configuration: who the voice agent is and what it knows.

An agent is one YAML file, ``<directory>/<agent id>.yaml``: its greeting, a
system prompt for real language models, the FAQ the embedded responder
answers from, what to say when nothing matches, the line is bad or a
provider fails, where to transfer the caller, the languages it speaks,
where its calls may be processed, and what it can do: ``tools`` the model
may call (HTTP tools and built-ins, :mod:`aybiza.tools.specs`) and the
``action`` an FAQ entry binds (an FAQ "speak to a person" transfers the
caller after its answer). The models are frozen pydantic models; a bad file
is a :class:`ConfigError` that names the file and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .results.spec import WebhookSpec
from .tools.specs import Action, BuiltinToolSpec, HttpToolSpec, ToolSpec

__all__ = ["FAQ", "AgentConfig", "AgentTranslation", "FAQTranslation", "RESIDENCIES", "load_agent", "list_agents",
           "agent_exists", "AGENT_ID_PATTERN"]

AGENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""Agent ids are plain names: letters, digits, ``_`` and ``-`` (no path separators, no dots)."""

_DEFAULT_REPROMPT = "Sorry, the line is bad — could you move somewhere quieter and say that again?"

RESIDENCIES = ("EU", "US", "APAC", "caller")
"""Where an agent's calls may be processed: one zone, or ``caller`` (the zone of the caller's number)."""

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_E164_SEPARATORS = re.compile(r"[\s().-]")
_SIP_URI = re.compile(r"^sips?:\S+$", re.IGNORECASE)
_LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}$")


def _primary_language(tag: str) -> str:
    """``en`` for ``en-GB``: the primary subtag, lower case."""
    return tag.strip().split("-")[0].split("_")[0].lower()


def _transfer_target(value: str) -> str:
    """An E.164 number (separators removed) or a ``sip:`` URI (scheme in lower case); ValueError otherwise."""
    text = value.strip()
    number = _E164_SEPARATORS.sub("", text)
    if _E164.fullmatch(number):
        return number
    if _SIP_URI.fullmatch(text):
        scheme, rest = text.split(":", 1)
        return f"{scheme.lower()}:{rest}"
    raise ValueError("a transfer target is an E.164 number (+14155550123) or a sip: URI (sip:desk@pbx.example.com)")


def _non_blank(value: str, what: str) -> str:
    text = value.strip()
    if not text:
        raise ValueError(f"{what} must not be blank")
    return text


class FAQ(BaseModel):
    """One answer and the ways a caller may ask for it; ``action`` runs after the answer is heard."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    answer: str
    questions: tuple[str, ...] = Field(min_length=1)
    action: Action | None = None
    topic: str | None = None  # how the agent names it when it asks "did you mean ...?" (default: from the id)

    @property
    def subject(self) -> str:
        """What "did you mean ...?" calls this FAQ."""
        return self.topic or self.id.replace("_", " ")

    @field_validator("answer")
    @classmethod
    def _answer_not_blank(cls, value: str) -> str:
        return _non_blank(value, "answer")

    @field_validator("questions")
    @classmethod
    def _questions_not_blank(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_non_blank(q, "a question") for q in value)


class FAQTranslation(BaseModel):
    """One FAQ in another language: its answer, how callers ask in that language, its topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    answer: str
    questions: tuple[str, ...] = Field(min_length=1)
    topic: str | None = None


class AgentTranslation(BaseModel):
    """What the agent says in another language; a field left out falls back to the agent's own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    greeting: str | None = None
    fallback: str | None = None
    reprompt: str | None = None
    confirm_prompt: str | None = None
    apology: str | None = None
    goodbye: str | None = None
    retry_prompt: str | None = None
    handoff: str | None = None
    holding_line: str | None = None
    silence_prompt: str | None = None
    silence_goodbye: str | None = None
    filler: str | None = None
    hold: str | None = None
    cannot_transfer: str | None = None
    digits_retry: str | None = None
    voicemail: str | None = None
    faqs: dict[str, FAQTranslation] = Field(default_factory=dict)

    def __hash__(self) -> int:  # frozen, but holds a dict: hash the content
        return hash(self.model_dump_json())


class AgentConfig(BaseModel):
    """A voice agent: persona, prompts and the FAQ it can answer without a model.

    When a turn fails the caller hears ``retry_prompt``; when a reply is late,
    ``holding_line``; when the caller says nothing, ``silence_prompt`` and at
    last ``silence_goodbye``; when the call cannot
    go on, ``apology`` and then ``handoff`` (and a transfer to
    ``transfer_to``, an E.164 number or a ``sip:`` URI) or, with nowhere to
    transfer to, ``goodbye``. ``languages`` are the primary language tags the
    agent speaks (default: that of ``language``); ``residency`` keeps its
    calls in one zone (``EU``, ``US``, ``APAC``) or in the caller's.

    Lines its tools speak: ``filler`` when a tool takes longer than a second,
    ``hold`` before a warm transfer's hold, ``cannot_transfer`` when a transfer
    is asked for and impossible (a browser call, no call control, the person
    did not answer), ``digits_retry`` when no keys came while collecting digits.
    An outbound call answered by a machine hears ``voicemail`` after the beep.
    """

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
    transfer_to: str | None = None
    apology: str = "I'm sorry, we're having a technical problem on our side."
    goodbye: str = "Please call us back in a few minutes. Goodbye."
    retry_prompt: str = "Could you say that again in a moment?"
    handoff: str = "Let me put you through to a colleague."
    holding_line: str = "One moment, please."
    silence_prompt: str = "Are you still there? How can I help?"
    silence_goodbye: str = "I haven't heard anything for a while, so I'll end the call now. Goodbye."
    languages: tuple[str, ...] = ("en",)
    tools: tuple[ToolSpec, ...] = ()
    filler: str = "One moment, please."
    hold: str = "Please hold for a moment while I brief a colleague."
    cannot_transfer: str = "I'm sorry, I can't put you through to a person right now."
    # Call recording and PII redaction (issue 14, items 4-5).
    record: bool = False  # record this agent's calls (AYBIZA_RECORD_CALLS records every agent's)
    redact_pii: bool | None = None  # None: AYBIZA_REDACT_PII decides
    digits_retry: str = "Sorry, I didn't get that. Please type the number on your keypad, then press the hash key."
    translations: dict[str, AgentTranslation] = Field(default_factory=dict)
    confirm_prompt: str = "Did you mean {topic}?"
    confirm_band: float = Field(default=0.08, ge=0.0, le=1.0)
    # Outbound calls (issue 14, item 3): the message a machine records, and limits (None: the AYBIZA_OUTBOUND_* ones).
    voicemail: str = "Hello, we tried to reach you. Please call us back when you can. Goodbye."
    outbound_max_calls: int | None = Field(default=None, ge=0)
    outbound_dials_per_minute: float | None = Field(default=None, gt=0)
    outbound_dial_burst: int | None = Field(default=None, ge=1)
    # Post-call results (issue 14, item 6): where the call record, a summary and fields are POSTed at its end.
    webhook: WebhookSpec | None = None

    def __hash__(self) -> int:  # frozen, but holds dicts: hash the content
        return hash(self.model_dump_json())

    def speaks(self, language: str) -> bool:
        """Whether the agent speaks ``language`` (a tag such as ``es-MX``)."""
        return _primary_language(language) in self.languages

    def reply_language(self, language: str) -> str:
        """The language to answer a caller speaking ``language`` in: theirs when the agent speaks it."""
        return language if self.speaks(language) else self.language

    def text(self, field: str, language: str) -> str:
        """The agent's ``field`` (greeting, fallback, ...) in ``language`` where translated, else its own."""
        own = str(getattr(self, field))
        primary = _primary_language(language)
        if primary == _primary_language(self.language):
            return own
        translation = self.translations.get(primary)
        value = getattr(translation, field, None) if translation is not None else None
        return str(value) if value else own

    def faqs_in(self, language: str) -> tuple[FAQ, ...]:
        """The FAQ in ``language`` (same ids; the agent's own where a FAQ is not translated)."""
        primary = _primary_language(language)
        translation = self.translations.get(primary)
        if primary == _primary_language(self.language) or translation is None:
            return self.faqs
        return tuple(FAQ(id=faq.id, answer=t.answer, questions=t.questions, topic=t.topic, action=faq.action)
                     if (t := translation.faqs.get(faq.id)) is not None else faq for faq in self.faqs)

    @model_validator(mode="before")
    @classmethod
    def _languages_default_to_language(cls, data: Any) -> Any:
        if isinstance(data, dict) and "languages" not in data and isinstance(data.get("language"), str):
            data = {**data, "languages": (_primary_language(data["language"]),)}
        return data

    @field_validator("id")
    @classmethod
    def _id_is_plain(cls, value: str) -> str:
        if not AGENT_ID_PATTERN.fullmatch(value):
            raise ValueError("agent id may only contain letters, digits, '_' and '-'")
        return value

    @field_validator("greeting", "fallback", "reprompt", "name", "apology", "goodbye", "retry_prompt", "handoff",
                     "filler", "hold", "cannot_transfer", "digits_retry",
                     "holding_line", "silence_prompt", "silence_goodbye", "confirm_prompt", "voicemail")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        return _non_blank(value, "this field")

    @field_validator("transfer_to")
    @classmethod
    def _transfer_to(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return _transfer_target(value)
        except ValueError:
            raise ValueError("transfer_to must be an E.164 number (+14155550123) or a sip: URI "
                             "(sip:desk@pbx.example.com)") from None

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: tuple[HttpToolSpec | BuiltinToolSpec, ...]) -> tuple[HttpToolSpec | BuiltinToolSpec, ...]:
        names = [tool.name for tool in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"tool names must be unique: {twice}")
        return tuple(tool.model_copy(update={"target": _transfer_target(tool.target)})
                     if isinstance(tool, BuiltinToolSpec) and tool.target else tool for tool in value)

    @model_validator(mode="after")
    def _transfers_have_a_target(self) -> Self:
        for tool in self.tools:
            if isinstance(tool, BuiltinToolSpec) and tool.builtin in ("transfer", "warm_transfer") \
                    and not (tool.target or self.transfer_to):
                raise ValueError(f"tool {tool.name} needs a target (or the agent's transfer_to)")
        for faq in self.faqs:
            if faq.action in ("transfer", "warm_transfer") and not self.transfer_to:
                raise ValueError(f"FAQ {faq.id!r} transfers the caller: set the agent's transfer_to")
        return self

    def tool(self, name: str) -> HttpToolSpec | BuiltinToolSpec | None:
        """The tool called ``name``, if the agent has one."""
        return next((tool for tool in self.tools if tool.name == name), None)

    @field_validator("languages")
    @classmethod
    def _language_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one language")
        tags = tuple(tag.strip().lower() for tag in value)
        for tag in tags:
            if not _LANGUAGE_TAG.fullmatch(tag):
                raise ValueError(f"{tag!r} is not a primary language tag (two or three letters: en, es, fil)")
        if len(set(tags)) != len(tags):
            raise ValueError("a language is listed twice")
        return tags

    @field_validator("residency")
    @classmethod
    def _residency_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for zone in RESIDENCIES:
            if value.strip().lower() == zone.lower():
                return zone
        raise ValueError(f"residency must be one of {', '.join(RESIDENCIES)} (or null)")

    @model_validator(mode="after")
    def _speaks_its_language(self) -> Self:
        if _primary_language(self.language) not in self.languages:
            raise ValueError(f"language {self.language!r} is not among languages {list(self.languages)}")
        for tag, translation in self.translations.items():
            if tag not in self.languages:
                raise ValueError(f"translation {tag!r} is for a language not among languages {list(self.languages)}")
            unknown = sorted(set(translation.faqs) - {faq.id for faq in self.faqs})
            if unknown:
                raise ValueError(f"translation {tag!r} has FAQs the agent does not: {', '.join(unknown)}")
        if "{topic}" not in self.confirm_prompt:
            raise ValueError("confirm_prompt must say {topic}")
        return self

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


def agent_exists(agent_id: str, directory: Path) -> bool:
    """Whether ``agent_id`` is a valid id with a file in ``directory`` (one ``stat``; the file is not read)."""
    return bool(AGENT_ID_PATTERN.fullmatch(agent_id)) and (Path(directory) / f"{agent_id}.yaml").is_file()


def load_agent(agent_id: str, directory: Path) -> AgentConfig:
    """Read ``<directory>/<agent_id>.yaml``; raise ConfigError naming the file on any problem."""
    path = _agent_path(agent_id, directory)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"agent {agent_id!r}: no file {path}") from None
    except OSError as exc:
        raise ConfigError(f"agent {agent_id!r}: cannot read {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from exc
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
