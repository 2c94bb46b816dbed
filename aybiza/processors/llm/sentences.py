"""Streaming model text to spoken sentences: the splitter and the reply processor.

:class:`SentenceSplitter` cuts a stream of text deltas into sentences as soon
as each is complete (a terminator followed by whitespace, a CJK terminator, a
line break, or a soft length cap at a clause boundary), so the first sentence
can be spoken while the model is still writing the second.

:class:`ReplyProcessor` is the model stage every chat provider shares: it
keeps the conversation, asks a :class:`ReplyStreamer` (Bedrock, an
OpenAI-compatible server, or a router that fails over between them) for a
reply to each :class:`UserTurn` on a :class:`Worker`, pushes
:class:`AgentText` sentence by sentence and then :class:`AgentTurnDone`.
Thinking text is never spoken. Barge-in cancels the reply in flight.

A turn no provider answers (every region failed) is never silence: the
caller hears an apology and "could you say that again?" in the local voice;
after ``max_failed_turns`` such turns in a row the stage ends the call
(``EndReason.MODEL_UNAVAILABLE``) and the call's fallback (a transfer, or a
goodbye) follows.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal, Protocol

from anyio.abc import TaskGroup

from ...errors import CallEnded, EndReason, ProviderError
from ...pipeline import (
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    IncidentKind,
    Interruption,
    Notice,
    Processor,
    Stage,
    UserTurn,
    Worker,
)

__all__ = [
    "ChatMessage",
    "ReplyEvent",
    "ReplyProcessor",
    "ReplyRequest",
    "ReplyStop",
    "ReplyStreamer",
    "ReplyUsage",
    "SentenceSplitter",
    "TextDelta",
    "ThinkingDelta",
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
    """One message of the conversation."""

    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True, slots=True)
class ReplyRequest:
    """What a model is asked: the system prompt and the conversation so far."""

    system: str
    messages: tuple[ChatMessage, ...]
    language: str = "en"


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply to speak."""

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


ReplyEvent = TextDelta | ThinkingDelta | ReplyUsage | ReplyStop


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
    """Drop blank messages, merge consecutive same-role ones, start with a user message."""
    out: list[ChatMessage] = []
    for message in messages:
        text = message.text.strip()
        if not text:
            continue
        if out and out[-1].role == message.role:
            out[-1] = ChatMessage(message.role, f"{out[-1].text}\n{text}")
        else:
            out.append(ChatMessage(message.role, text))
    if out and out[0].role != "user":
        out.insert(0, ChatMessage("user", placeholder))
    return out


# -- the processor -------------------------------------------------------------------


class ReplyProcessor(Processor):
    """UserTurn → AgentText per sentence → AgentTurnDone, with the conversation kept."""

    name = "llm"
    consumes = frozenset({UserTurn, Interruption})
    produces = frozenset({AgentText, AgentTurnDone})

    def __init__(
        self,
        streamer: ReplyStreamer,
        *,
        system_prompt: str,
        history: Sequence[ChatMessage] = (),
        max_history: int = 40,
        max_sentence_chars: int = 240,
        max_failed_turns: int = 2,
    ) -> None:
        super().__init__()
        self.streamer = streamer
        self.system_prompt = system_prompt
        self.history: list[ChatMessage] = list(history)
        self.max_history = max_history
        self.max_sentence_chars = max_sentence_chars
        self.max_failed_turns = max_failed_turns
        self._failed_in_a_row = 0
        self._worker: Worker[UserTurn] = Worker(self._reply, maxsize=8)

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        await super().start(ctx, tg)
        self._worker.start(tg, name=f"{self.name}-worker")

    async def stop(self) -> None:
        await self._worker.close()
        await self.streamer.aclose()

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, UserTurn):
            await self._worker.put(frame)
        elif isinstance(frame, Interruption):
            self._worker.flush()
            await self.push(frame)
        else:
            await self.push(frame)

    def _request(self, turn: UserTurn) -> ReplyRequest:
        recent = self.history[-self.max_history :]
        return ReplyRequest(self.system_prompt, tuple(normalise_messages(recent)), turn.language)

    async def _reply(self, turn: UserTurn) -> None:
        ctx = self.ctx
        assert ctx is not None, "ReplyProcessor used before start()"
        ledger = ctx.ledger
        self.history.append(ChatMessage("user", turn.text))
        request = self._request(turn)
        splitter = SentenceSplitter(self.max_sentence_chars)
        said: list[str] = []
        started = time.monotonic()
        first_token = True
        answered_by = self.streamer.provider

        async def say(sentence: str) -> None:
            if not said:
                ledger.time(Stage.LLM_FIRST_SENTENCE, time.monotonic() - started)
            said.append(sentence)
            await self.push(AgentText(sentence, turn.turn_id, turn.language))

        try:
            async with aclosing(self.streamer.stream_reply(request)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        if first_token:
                            first_token = False
                            ledger.time(Stage.LLM_FIRST_TOKEN, time.monotonic() - started)
                        for sentence in splitter.push(event.text):
                            await say(sentence)
                    elif isinstance(event, ReplyUsage):
                        answered_by = event.model_id
                        ledger.add_tokens(event.model_id, event.input_tokens, event.output_tokens)
                        if event.latency_ms is not None:
                            ledger.time(Stage.LLM_PROVIDER_LATENCY, event.latency_ms / 1000.0)
            rest = splitter.flush()
            if rest:
                await say(rest)
        except ProviderError as exc:
            ledger.model_errors += 1
            ledger.incident(IncidentKind.MODEL_FAILED, f"{type(exc).__name__}: {exc}")
            ctx.log.error("%s reply failed (%s, retryable=%s): %s", self.streamer.provider, type(exc).__name__,
                          exc.retryable, exc)
            if not said:
                self._failed_in_a_row += 1
                if self._failed_in_a_row >= self.max_failed_turns:
                    raise CallEnded(EndReason.MODEL_UNAVAILABLE,
                                    f"{self._failed_in_a_row} turns in a row got no answer: {exc}") from exc
                await ctx.announce(Notice.RETRY)
        finally:
            if said:
                self.history.append(ChatMessage("assistant", " ".join(said)))
        if said:
            self._failed_in_a_row = 0
            ledger.answered(answered_by)
        await self.push(AgentTurnDone(turn.turn_id))
