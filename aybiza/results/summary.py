"""What a call was about: a short summary and the agent's fields, without a model (extractive).

The embedded stack has no language model, so the summary is built from the
record itself: the FAQ topics the agent answered (an answer is recognised by
its text, in any language the agent speaks), what the caller asked, and how
the call ended. Fields come from simple patterns where a name is known
(``callback_number``: a phone number the caller said, else the number they
called from; ``email``; ``reason_for_call``: the first topic, else the first
question); any other field is ``None`` — an honest blank rather than a guess.
:mod:`.model_summary` does the same with a model when one is configured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..agents import AgentConfig
from ..edge.records import CallRecord
from .spec import WebhookSpec

__all__ = ["CallResults", "extractive_results", "faq_topics"]

_PHONE = re.compile(r"(?<![\w+])(\+?\d[\d\s().-]{6,18}\d)(?!\w)")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_WORDS = re.compile(r"\W+")
_SPOKEN_DIGITS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                  "six": "6", "seven": "7", "eight": "8", "nine": "9"}


@dataclass(frozen=True)
class CallResults:
    """A call's summary and extracted fields, and what produced them (``extractive`` or ``model:<id>``)."""

    summary: str
    fields: dict[str, Any] = field(default_factory=dict)
    source: str = "extractive"


def _normal(text: str) -> str:
    return _WORDS.sub(" ", text.lower()).strip()


def faq_topics(record: CallRecord, agent: AgentConfig | None) -> list[tuple[str, str]]:
    """``(faq id, topic)`` of each FAQ answer the agent gave (in any language it speaks), in order, once each."""
    if agent is None:
        return []
    topics = {faq.id: faq.subject for faq in agent.faqs}  # named in the agent's own language, for its business
    answers: dict[str, tuple[str, str]] = {}
    for language in agent.languages:
        for faq in agent.faqs_in(language):
            answers[_normal(faq.answer)] = (faq.id, topics[faq.id])
    found: list[tuple[str, str]] = []
    for turn in record.turns:
        spoken = _normal(turn.agent)
        for answer, (faq_id, topic) in answers.items():
            if answer and answer in spoken and all(faq_id != seen for seen, _ in found):
                found.append((faq_id, topic))
    return found


def _phone_in(text: str) -> str | None:
    words = [_SPOKEN_DIGITS.get(word, word) for word in text.lower().split()]
    joined = " ".join(words)
    for match in _PHONE.finditer(joined):
        digits = re.sub(r"[^\d+]", "", match.group(1))
        if 7 <= len(digits.lstrip("+")) <= 15:
            return digits
    return None


def extractive_results(record: CallRecord, agent: AgentConfig | None, spec: WebhookSpec) -> CallResults:
    """The summary and fields of ``record`` built from its own words (no model)."""
    questions = [turn.user.strip() for turn in record.turns if turn.user.strip()]
    topics = faq_topics(record, agent)
    parts: list[str] = []
    if topics:
        parts.append("The caller asked about " + ", ".join(topic for _, topic in topics) + ".")
    elif questions:
        parts.append(f"The caller said: \"{questions[0][:200]}\".")
    else:
        parts.append("The caller said nothing the agent understood.")
    if record.outcome:
        parts.append(f"The call ended: {record.outcome.replace('_', ' ')}.")
    said = " ".join(questions)
    values: dict[str, Any] = {}
    for wanted in spec.fields:
        name = wanted.name
        if name == "callback_number":
            values[name] = _phone_in(said) or (record.caller or None)
        elif name == "email":
            match = _EMAIL.search(said)
            values[name] = match.group(0) if match else None
        elif name == "reason_for_call":
            values[name] = topics[0][1] if topics else (questions[0][:200] if questions else None)
        elif name in ("topics", "faq_ids"):
            values[name] = [faq_id for faq_id, _ in topics]
        elif name == "language":
            values[name] = record.language
        else:
            values[name] = None
    return CallResults(" ".join(parts), values, "extractive")
