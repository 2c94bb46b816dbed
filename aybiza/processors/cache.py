"""Answer and audio caching around the model and TTS stages.

**Answers** — :class:`CachedAnswers` *wraps* the model stage rather than
sitting before it as a separate processor, because it must see both sides:
the caller's :class:`UserTurn` going in, and the model's
:class:`AgentText`/:class:`AgentTurnDone` coming out. As one processor it
needs no state shared between two list entries and no new frame type, and it
goes into the pipeline in the model's place::

    CachedAnswers(FAQResponder(agent), cache, AnswerPolicy(agent, stateless_model=True))

On a cacheable turn (see :class:`~aybiza.edge.answers.AnswerPolicy`) with a
hit, the cached sentences and an ``AgentTurnDone`` go downstream at once and
the model never sees the turn. Every lookup is counted on the call's ledger
(``CacheKind.ANSWER``, hit or miss), which the metrics see at once. On a miss
the turn goes to the model, whose answer is recorded on its way out and
stored when its ``AgentTurnDone`` arrives — unless the turn was
interrupted, the model failed it, or a tool or action ran in it (an answer
that looked something up, or transferred the caller, is not one to replay).
A model that keeps a conversation (``history`` list of
:class:`ChatMessage`, e.g. :class:`ReplyProcessor`) is told about a turn
the cache answered, so the next turn has its context.

**Audio** — :class:`CachingSynthesizer` wraps a TTS *engine*, not the TTS
processor: hits then flow through :class:`TTSProcessor`'s own queue, so a
cached sentence never overtakes one still being synthesized and barge-in
drops it like any other. A hit replays the stored chunks (same boundaries,
so playback starts as soon as it did); a miss passes the engine's chunks
through and stores them once the sentence was spoken in full. Lookups are
counted on the ledger (``CacheKind.AUDIO``); only a miss is billed as
characters synthesised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
from anyio.abc import TaskGroup

from ..edge.answers import (
    ANSWER_NAMESPACE,
    TTS_NAMESPACE,
    AnswerPolicy,
    CachedAnswer,
    decode_audio,
    encode_audio,
    tts_key,
)
from ..edge.cache import Cache
from ..pipeline import (
    AgentText,
    AgentTurnDone,
    CacheKind,
    CallContext,
    Frame,
    Interruption,
    Processor,
    Stage,
    UserTurn,
)
from .llm.sentences import ChatMessage
from .tts.base import AudioChunk, SpeechSynthesizer

__all__ = [
    "CachedAnswers",
    "CachingSynthesizer",
    "WrappingProcessor",
    "engine_voice_id",
]

log = logging.getLogger("aybiza.cache")


class WrappingProcessor(Processor):
    """A processor that contains another one and sees both what goes in and what comes out.

    Frames reach :meth:`process` (default: hand to ``inner``); what ``inner``
    pushes reaches :meth:`from_inner` (default: pass downstream). Start and
    stop are delegated.
    """

    name = "wrapper"

    def __init__(self, inner: Processor) -> None:
        super().__init__()
        self.inner = inner
        self.tg: TaskGroup | None = None
        inner.push = self.from_inner
        inner.steer = self._steer_from_inner
        self.consumes = inner.consumes  # type: ignore[misc]
        self.produces = inner.produces  # type: ignore[misc]
        self.steers = inner.steers  # type: ignore[misc]

    def link(self, downstream: Processor | None) -> None:
        """Link this processor; the inner one keeps pushing into :meth:`from_inner`."""
        super().link(downstream)
        self.inner.push = self.from_inner

    async def _steer_from_inner(self, frame: Frame) -> None:
        await self.steer(frame)

    async def control(self, frame: Frame) -> None:
        """Control frames from downstream reach the inner processor (which passes them further up)."""
        await self.inner.control(frame)

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Start, then start the inner processor."""
        await super().start(ctx, tg)
        self.tg = tg
        await self.inner.start(ctx, tg)

    async def stop(self) -> None:
        """Stop the inner processor."""
        await self.inner.stop()

    async def process(self, frame: Frame) -> None:
        """Hand the frame to the inner processor."""
        await self.inner.process(frame)

    async def from_inner(self, frame: Frame) -> None:
        """What the inner processor pushes; passed downstream."""
        await self.push(frame)


def _errors(ctx: CallContext | None) -> int:
    return ctx.ledger.model_errors if ctx is not None else 0


def _tool_calls(ctx: CallContext | None) -> int:
    return ctx.ledger.tool_calls if ctx is not None else 0


@dataclass(slots=True)
class _Recording:
    key: str
    language: str
    errors_before: int
    tools_before: int
    texts: list[str] = field(default_factory=list)


class CachedAnswers(WrappingProcessor):
    """Serves cacheable turns from the cache, else asks the wrapped model and stores its answer.

    ``resumed=True`` for a call taken over from another process: its next
    turn is not the call's first, so it is not context-free.
    """

    name = "cached-answers"

    def __init__(
        self,
        model: Processor,
        cache: Cache,
        policy: AnswerPolicy,
        *,
        ttl_s: float = 3600.0,
        lookup_timeout_s: float = 0.15,
        resumed: bool = False,
    ) -> None:
        super().__init__(model)
        self.cache = cache
        self.policy = policy
        self.ttl_s = ttl_s
        self.lookup_timeout_s = lookup_timeout_s
        self.hits = 0
        self.misses = 0
        # The call's first turn (by id: a preemptive guess and its confirmation share one). A call resumed
        # from another process has had its first turn already.
        self._resumed = resumed
        self._first_turn_id: int | None = None
        self._recording: dict[int, _Recording] = {}

    async def process(self, frame: Frame) -> None:
        """Answer cacheable turns from the cache; everything else goes to the model."""
        if isinstance(frame, UserTurn):
            if await self._turn(frame):
                return
        elif isinstance(frame, Interruption):
            self._recording.clear()  # an answer cut short is not worth keeping
        await self.inner.process(frame)

    async def _turn(self, turn: UserTurn) -> bool:
        """True if the cache answered ``turn``; otherwise maybe start recording the model's answer."""
        if not turn.text.strip():
            return False
        if self._first_turn_id is None:
            self._first_turn_id = turn.turn_id
        first = not self._resumed and turn.turn_id == self._first_turn_id
        key = self.policy.key_for(turn.text, turn.language, first_turn=first)
        if key is None:
            return False
        arrived = time.monotonic()
        answer = await self._lookup(key)
        if self.ctx is not None:
            self.ctx.ledger.cache(CacheKind.ANSWER, answer is not None, turn=turn.turn_id)
        if answer is not None:
            self.hits += 1
            await self._serve(turn, answer, arrived)
            return True
        self.misses += 1
        for stale in [t for t in self._recording if t < turn.turn_id - 4]:
            del self._recording[stale]
        self._recording[turn.turn_id] = _Recording(key, turn.language, _errors(self.ctx), _tool_calls(self.ctx))
        return False

    async def _lookup(self, key: str) -> CachedAnswer | None:
        raw: bytes | None = None
        with anyio.move_on_after(self.lookup_timeout_s):
            raw = await self.cache.get(ANSWER_NAMESPACE, key)
        return None if raw is None else CachedAnswer.decode(raw)

    async def _serve(self, turn: UserTurn, answer: CachedAnswer, arrived: float) -> None:
        ctx = self.ctx
        if ctx is not None:
            ctx.ledger.answered("cache")
            ctx.ledger.time(Stage.CACHE_ANSWER, time.monotonic() - arrived)
            if ctx.log.isEnabledFor(logging.INFO):
                ctx.log.info("turn %d answered from the cache", turn.turn_id)
        self._remember(turn.text, " ".join(answer.sentences))
        for sentence in answer.sentences:
            await self.push(AgentText(sentence, turn.turn_id, answer.language))
        await self.push(AgentTurnDone(turn.turn_id))

    def _remember(self, user: str, agent: str) -> None:
        """Tell a model that keeps a conversation about a turn it did not answer itself."""
        history = getattr(self.inner, "history", None)
        if isinstance(history, list):
            history.append(ChatMessage("user", user))
            history.append(ChatMessage("assistant", agent))

    async def from_inner(self, frame: Frame) -> None:
        """Pass the model's output on at once; record answers to cacheable turns."""
        await self.push(frame)
        if isinstance(frame, AgentText):
            recording = self._recording.get(frame.turn_id)
            if recording is not None and frame.text.strip():
                recording.texts.append(frame.text)
                recording.language = frame.language
        elif isinstance(frame, AgentTurnDone):
            recording = self._recording.pop(frame.turn_id, None)
            unsettled = getattr(self.inner, "unsettled_turns", ())  # a reply that depends on the conversation
            if recording is not None and self._worth_keeping(recording) and frame.turn_id not in unsettled:
                answer = CachedAnswer(tuple(recording.texts), recording.language)
                if self.tg is not None:
                    self.tg.start_soon(self._store, recording.key, answer)
                else:
                    await self._store(recording.key, answer)

    def _worth_keeping(self, recording: _Recording) -> bool:
        return (bool(recording.texts) and _errors(self.ctx) <= recording.errors_before
                and _tool_calls(self.ctx) <= recording.tools_before)

    async def _store(self, key: str, answer: CachedAnswer) -> None:
        with anyio.move_on_after(max(self.lookup_timeout_s, 0.5)):
            await self.cache.set(ANSWER_NAMESPACE, key, answer.encode(), self.ttl_s)


def engine_voice_id(engine: SpeechSynthesizer) -> str:
    """A stable name for an engine's voice: its name plus its voice or model file, if it has one."""
    parts = [engine.name]
    for attribute in ("voice", "model_path"):
        value: Any = getattr(engine, attribute, None)
        if isinstance(value, Path):
            parts.append(value.name)
        elif isinstance(value, str) and value:
            parts.append(value)
    return ":".join(parts)


class CachingSynthesizer:
    """A :class:`SpeechSynthesizer` that replays sentences it has spoken before from the cache.

    Build one per call around the process-wide engine (it is cheap) so lookups
    are counted on the call's ledger, and only a miss is billed as characters
    the engine synthesised (``meters_usage``: the TTS stage leaves the counting
    to it). Runs in the TTS stage's worker thread and reaches the cache and
    the ledger on the event loop through ``anyio.from_thread``; outside such a
    thread it simply passes through.
    """

    meters_usage = True

    def __init__(
        self,
        engine: SpeechSynthesizer,
        cache: Cache,
        *,
        ctx: CallContext | None = None,
        voice: str | None = None,
        fmt: str = "pcm16le",
        ttl_s: float = 86400.0,
        max_entry_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.ctx = ctx
        self.name = engine.name
        self.voice = voice or engine_voice_id(engine)
        self.fmt = fmt
        self.ttl_s = ttl_s
        self.max_entry_bytes = max_entry_bytes

    def warm(self) -> None:
        """Warm the wrapped engine if it can be warmed."""
        warm = getattr(self.engine, "warm", None)
        if callable(warm):
            warm()

    def synthesize(self, text: str, language: str) -> Iterator[AudioChunk]:
        """The cached chunks of ``text`` if any, else the engine's (stored once complete)."""
        key = tts_key(text, self.voice, language, self.fmt)
        raw = self._on_loop(self.cache.get, TTS_NAMESPACE, key)
        decoded = decode_audio(raw) if isinstance(raw, bytes) else None
        self._count(decoded is not None, len(text))
        if decoded is not None:
            chunks, rate = decoded
            for chunk in chunks:
                yield chunk, rate
            return
        yield from self._record(key, text, language)

    def _record(self, key: str, text: str, language: str) -> Iterator[AudioChunk]:
        stream = iter(self.engine.synthesize(text, language))
        kept: list[bytes] = []
        rates: set[int] = set()
        size = 0
        try:
            for pcm, rate in stream:
                if size <= self.max_entry_bytes:
                    kept.append(pcm)
                    rates.add(rate)
                    size += len(pcm)
                yield pcm, rate
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # stopped early (barge-in): let a subprocess engine end its process
        # Reached only when the sentence was spoken in full.
        if kept and len(rates) == 1 and size <= self.max_entry_bytes:
            self._on_loop(self.cache.set, TTS_NAMESPACE, key, encode_audio(kept, rates.pop()), self.ttl_s)

    def _count(self, hit: bool, chars: int) -> None:
        ctx = self.ctx
        if ctx is None:
            return

        def count() -> None:
            ctx.ledger.cache(CacheKind.AUDIO, hit)
            if not hit:
                ctx.ledger.add_tts(self.engine.name, chars)

        try:
            anyio.from_thread.run_sync(count)
        except RuntimeError:
            count()  # not in a worker thread: we are on the loop already (or in a test)

    @staticmethod
    def _on_loop(fn: Any, *args: Any) -> Any:
        """Run cache coroutine ``fn(*args)`` on the event loop from this worker thread; None if unavailable."""
        try:
            return anyio.from_thread.run(fn, *args)
        except RuntimeError:
            return None  # not called from an anyio worker thread: no cache
        except Exception as error:  # the cache must never fail the speech
            log.warning("tts cache unavailable: %s: %s", type(error).__name__, error)
            return None
