"""Streaming model text to spoken sentences, and the provider-neutral reply stream.

:class:`SentenceSplitter` cuts a stream of text deltas into sentences as soon
as each is complete (a terminator followed by whitespace, a CJK terminator, a
line break, or a soft length cap at a clause boundary), so the first sentence
can be spoken while the model is still writing the second.

The conversation and the reply stream every chat provider speaks: a
:class:`ChatMessage` (text, and the tool calls an assistant message made or
the tool results a user message carries), a :class:`ReplyRequest`, and the
events of a reply (text, thinking, usage, stop, and each complete
:class:`~aybiza.processors.llm.tooling.ToolCall`). The model stage that
speaks them is :class:`~aybiza.processors.llm.reply.ReplyProcessor`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from .tooling import ToolCall, ToolResult, ToolSchema

__all__ = [
    "ChatMessage",
    "ReplyEvent",
    "ReplyRequest",
    "ReplyStop",
    "ReplyStreamer",
    "ReplyUsage",
    "SentenceSplitter",
    "TextDelta",
    "ThinkingDelta",
    "ToolCall",
    "normalise_messages",
]

_TERMINATORS = ".!?…"
_CJK_TERMINATORS = "。！？"
_CLOSERS = "\"')]}”’»"
_CLAUSE_MARKS = (", ", "; ", ": ", " – ", " — ")
_ABBREVIATIONS = frozenset(
    "mr. mrs. ms. dr. prof. sr. jr. st. vs. e.g. i.e. a.m. p.m. no. approx. dept. inc. ltd. co. mt. "
    "fig. u.s. u.k. etc.".split()
)


class SentenceSplitter:
    """Cuts streamed text into sentences; ``push`` returns the ones now complete."""

    __slots__ = ("max_chars", "_buf", "_scan")

    def __init__(self, max_chars: int = 240) -> None:
        self.max_chars = max_chars
        self._buf = ""
        self._scan = 0

    def push(self, text: str) -> list[str]:
        """Add a delta; return the sentences it completed (possibly none)."""
        self._buf += text
        out: list[str] = []
        while (cut := self._boundary()) is not None:
            sentence = self._buf[:cut].strip()
            self._buf = self._buf[cut:].lstrip()
            self._scan = 0
            if sentence:
                out.append(sentence)
        return out

    def flush(self) -> str | None:
        """The text left at the end of the stream, if any."""
        rest = self._buf.strip()
        self._buf = ""
        self._scan = 0
        return rest or None

    def _boundary(self) -> int | None:
        buf = self._buf
        i = self._scan
        n = len(buf)
        while i < n:
            if i >= self.max_chars:
                return self._soft_cut()  # no sentence end within max_chars
            ch = buf[i]
            if ch in _CJK_TERMINATORS or ch == "\n":
                return i + 1
            if ch in _TERMINATORS:
                j = i + 1
                while j < n and (buf[j] in _TERMINATORS or buf[j] in _CLOSERS):
                    j += 1
                if j == n:
                    self._scan = i  # cannot tell yet: wait for the next delta
                    return None
                if buf[j].isspace() and not (ch == "." and self._abbreviation(i)):
                    return j
                i = j
                continue
            i += 1
        self._scan = n
        return None

    def _abbreviation(self, dot: int) -> bool:
        start = self._buf.rfind(" ", 0, dot) + 1
        word = self._buf[start : dot + 1]
        if word.lower() in _ABBREVIATIONS:
            return True
        core = word[:-1]
        # "J. Smith" (an initial) or "1. Open the app" (a list item at the start)
        return (len(core) == 1 and core.isupper()) or (start == 0 and core.isdigit())

    def _soft_cut(self) -> int:
        window = self._buf[: self.max_chars]
        best = max(window.rfind(mark) for mark in _CLAUSE_MARKS)
        if best > 0:
            return best + 1
        space = window.rfind(" ")
        return space if space > 0 else self.max_chars


# -- the provider-neutral reply stream ------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the conversation: an assistant message may call tools, a user message answer them."""

    role: Literal["user", "assistant"]
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()

    @property
    def blank(self) -> bool:
        """No text and no tool blocks: nothing a provider would accept."""
        return not self.text.strip() and not self.tool_calls and not self.tool_results


@dataclass(frozen=True, slots=True)
class ReplyRequest:
    """What a model is asked: the system prompt, the conversation so far and the tools it may call."""

    system: str
    messages: tuple[ChatMessage, ...]
    language: str = "en"
    tools: tuple[ToolSchema, ...] = ()


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply to speak; empty: the model is busy with something unspoken (a tool call's input).

    An empty delta keeps deadlines honest: the model is answering, just not in words.
    """

    text: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    """A piece of the model's reasoning; never spoken."""

    text: str


@dataclass(frozen=True, slots=True)
class ReplyUsage:
    """Tokens and provider-side latency of one reply."""

    model_id: str
    input_tokens: int
    output_tokens: int
    latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class ReplyStop:
    """The model stopped (``end_turn``, ``max_tokens``, ``stop`` ...)."""

    reason: str


ReplyEvent = TextDelta | ThinkingDelta | ReplyUsage | ReplyStop | ToolCall
"""What a reply streams; a :class:`ToolCall` arrives once its arguments are complete."""


class ReplyStreamer(Protocol):
    """A chat model behind some API; raises :class:`~aybiza.errors.ProviderError` subclasses."""

    provider: str

    def stream_reply(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        """Stream the reply to ``request``; close the iterator to abandon it."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def normalise_messages(
    messages: Sequence[ChatMessage], placeholder: str = "(the call connected)"
) -> list[ChatMessage]:
    """What every provider accepts: no blank messages, roles alternating, a user message first.

    Consecutive same-role messages are merged. A tool call is kept only when
    the next message answers it, and a tool result only when the message
    before asked for it (a history cut short, or a round the call ended in,
    would otherwise be refused).
    """
    merged = _merged(messages)
    paired: list[ChatMessage] = []
    for index, message in enumerate(merged):
        calls, results = message.tool_calls, message.tool_results
        if calls:
            after = merged[index + 1] if index + 1 < len(merged) else None
            answered = {r.call_id for r in after.tool_results} if after is not None else set()
            calls = tuple(call for call in calls if call.call_id in answered)
        if results:
            before = merged[index - 1] if index > 0 else None
            asked = {c.call_id for c in before.tool_calls} if before is not None else set()
            results = tuple(result for result in results if result.call_id in asked)
        paired.append(ChatMessage(message.role, message.text, calls, results))
    out = _merged(paired)
    if out and out[0].role != "user":
        out.insert(0, ChatMessage("user", placeholder))
    return out


def _merged(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    for message in messages:
        if message.blank:
            continue
        text = message.text.strip()
        if out and out[-1].role == message.role:
            last = out[-1]
            out[-1] = ChatMessage(message.role, "\n".join(t for t in (last.text, text) if t),
                                  last.tool_calls + message.tool_calls, last.tool_results + message.tool_results)
        else:
            out.append(ChatMessage(message.role, text, message.tool_calls, message.tool_results))
    return out
