"""Answer caching around the model stage and audio caching around the TTS engine."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
import pytest
from anyio.abc import TaskGroup

from aybiza.agents import FAQ, AgentConfig
from aybiza.edge.answers import AnswerPolicy
from aybiza.edge.cache import MemoryCache
from aybiza.pipeline import (
    DTMF,
    AgentText,
    AgentTurnDone,
    CacheKind,
    CallContext,
    Frame,
    Interruption,
    OutputAudio,
    Processor,
    Stage,
    UserTurn,
)
from aybiza.pipeline.ledger import CacheUse
from aybiza.processors.cache import CachedAnswers, CachingSynthesizer, engine_voice_id
from aybiza.processors.llm.sentences import ChatMessage
from aybiza.processors.tts.base import TTSProcessor

from .tts.helpers import RecordingSink

pytestmark = pytest.mark.anyio

AGENT = AgentConfig(
    id="dental", name="Dental", greeting="Hello.", system_prompt="Be brief.", fallback="Sorry?",
    faqs=(FAQ(id="hours", answer="Nine to five.", questions=("What are your opening hours?",)),),
)


class ScriptedModel(Processor):
    """A model answering each turn in a background task (mid-answer it waits on ``gate`` if set)."""

    name = "scripted-model"

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.asked: list[str] = []
        self.history: list[ChatMessage] = []
        self.error_text = "Sorry, something went wrong."
        self.fail = fail
        self.gate: anyio.Event | None = None
        self._tg: TaskGroup | None = None

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        await super().start(ctx, tg)
        self._tg = tg

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, UserTurn):
            self.asked.append(frame.text)
            assert self._tg is not None
            self._tg.start_soon(self._answer, frame)
            return
        await self.push(frame)

    async def _answer(self, turn: UserTurn) -> None:
        assert self.ctx is not None
        self.history.append(ChatMessage("user", turn.text))
        if self.fail:
            self.ctx.ledger.model_errors += 1
            await self.push(AgentText(self.error_text, turn.turn_id))
        else:
            await self.push(AgentText(f"About {turn.text.lower().rstrip('?')}.", turn.turn_id))
            if self.gate is not None:
                await self.gate.wait()
            await self.push(AgentText("That is all.", turn.turn_id))
        await self.push(AgentTurnDone(turn.turn_id))


@asynccontextmanager
async def running(
    processor: Processor, call_id: str = "CA1", ctx: CallContext | None = None
) -> AsyncIterator[tuple[RecordingSink, CallContext]]:
    """Run ``processor`` for one call with a recording sink downstream."""
    sink = RecordingSink()
    ctx = ctx or CallContext(call_id=call_id)
    processor.link(None)
    processor.push = sink
    async with anyio.create_task_group() as tg:
        await processor.start(ctx, tg)
        yield sink, ctx
        tg.cancel_scope.cancel()
    await processor.stop()


async def ask(processor: Processor, sink: RecordingSink, text: str, turn_id: int = 1) -> None:
    """Send a caller turn and wait for the agent's turn end."""
    await processor.process(UserTurn(text, turn_id=turn_id))
    await sink.wait_for(lambda _: sink.has(AgentTurnDone, turn_id))


async def stored(cache: MemoryCache, namespace: str, count: int) -> None:
    """Wait until ``count`` entries were written to ``namespace`` (stores happen off the frame path)."""
    with anyio.fail_after(10):
        while True:
            if cache.stats(namespace).sets >= count:
                return
            await anyio.sleep(0.005)


def texts(sink: RecordingSink) -> list[str]:
    return [f.text for f in sink.of(AgentText)]


async def test_repeated_first_question_is_answered_from_the_cache_without_the_model() -> None:
    cache = MemoryCache()
    first = ScriptedModel()
    cached = CachedAnswers(first, cache, AnswerPolicy(AGENT))
    async with running(cached) as (sink, ctx):
        await ask(cached, sink, "Do you take new patients?")
        assert first.asked == ["Do you take new patients?"]
        assert ctx.ledger.usage().cache == {CacheKind.ANSWER: CacheUse(hits=0, misses=1)}
    await stored(cache, "llm", 1)

    second = ScriptedModel()
    cached = CachedAnswers(second, cache, AnswerPolicy(AGENT))
    async with running(cached, "CA2") as (sink, ctx):
        await ask(cached, sink, "Um, do you take new patients?")
        assert second.asked == []
        assert texts(sink) == ["About do you take new patients.", "That is all."]
        assert isinstance(sink.frames[-1], AgentTurnDone)
        assert ctx.ledger.cache_hits(CacheKind.ANSWER) == 1
        assert [stage for stage, _, _ in ctx.ledger.samples] == [Stage.CACHE_ANSWER]
        assert ctx.ledger.usage().answered_by == "cache"
        # A model that keeps the conversation is told about the turn it did not answer.
        assert [(m.role, m.text) for m in second.history] == [
            ("user", "Um, do you take new patients?"), ("assistant", "About do you take new patients. That is all.")]
    assert (cached.hits, cached.misses) == (1, 0)


async def test_later_turns_go_to_the_model_unless_faq_like() -> None:
    cache = MemoryCache()
    for call_id in ("CA1", "CA2"):
        model = ScriptedModel()
        cached = CachedAnswers(model, cache, AnswerPolicy(AGENT))
        async with running(cached, call_id) as (sink, _):
            await ask(cached, sink, "Hello there", 1)
            await ask(cached, sink, "And what about Sundays?", 2)
            await ask(cached, sink, "What are your opening hours?", 3)
            await stored(cache, "llm", 2)
        if call_id == "CA1":
            assert model.asked == ["Hello there", "And what about Sundays?", "What are your opening hours?"]
    # Second call: the first turn and the FAQ-like turn came from the cache; the follow-up depends on context.
    assert model.asked == ["And what about Sundays?"]


async def test_stateless_model_answers_are_cached_on_every_turn() -> None:
    cache = MemoryCache()
    policy = AnswerPolicy(AGENT, stateless_model=True)
    first = CachedAnswers(ScriptedModel(), cache, policy)
    async with running(first) as (sink, _):
        await ask(first, sink, "Hi", 1)
        await ask(first, sink, "And on Sundays?", 2)
        await stored(cache, "llm", 2)
    model = ScriptedModel()
    second = CachedAnswers(model, cache, policy)
    async with running(second, "CA2") as (sink, ctx):
        await ask(second, sink, "And on Sundays?", 1)
    assert model.asked == [] and ctx.ledger.cache_hits(CacheKind.ANSWER) == 1


async def test_interrupted_answer_is_not_stored() -> None:
    cache = MemoryCache()
    model = ScriptedModel()
    model.gate = anyio.Event()
    cached = CachedAnswers(model, cache, AnswerPolicy(AGENT))
    async with running(cached) as (sink, _):
        await cached.process(UserTurn("Do you do implants?", turn_id=1))
        await sink.wait_for(lambda _: sink.has(AgentText, 1))
        await cached.process(Interruption(at=1.0))
        model.gate.set()  # this fake model goes on after the barge-in; its answer is still incomplete
        await sink.wait_for(lambda _: sink.has(AgentTurnDone, 1))
        await anyio.sleep(0.02)
    assert cache.stats("llm").sets == 0
    assert any(isinstance(f, Interruption) for f in sink.frames)


async def test_error_answers_and_disabled_agents_are_not_stored() -> None:
    cache = MemoryCache()
    failing = CachedAnswers(ScriptedModel(fail=True), cache, AnswerPolicy(AGENT))
    async with running(failing) as (sink, _):
        await ask(failing, sink, "Do you do implants?")
        await anyio.sleep(0.02)
    assert texts(sink) == ["Sorry, something went wrong."]
    off = AGENT.model_copy(update={"cache_answers": False})
    model = ScriptedModel()
    disabled = CachedAnswers(model, cache, AnswerPolicy(off))
    async with running(disabled) as (sink, _):
        await ask(disabled, sink, "Do you do implants?")
        await anyio.sleep(0.02)
    assert cache.stats("llm").sets == 0 and cache.stats("llm").lookups == 1
    assert model.asked == ["Do you do implants?"]


async def test_other_frames_pass_through_in_order() -> None:
    cached = CachedAnswers(ScriptedModel(), MemoryCache(), AnswerPolicy(AGENT))
    async with running(cached) as (sink, _):
        await cached.process(DTMF("5"))
        await cached.process(Interruption(at=2.0))
    assert sink.frames == [DTMF("5"), Interruption(at=2.0)]


# -- audio ----------------------------------------------------------------------------


class CountingEngine:
    """A fake TTS engine: 3 chunks per text; a text in ``gates`` waits before its second chunk."""

    name = "counting"

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.gates: dict[str, threading.Event] = {}

    def synthesize(self, text: str, language: str) -> Iterator[tuple[bytes, int]]:
        self.requests.append(text)
        for index in range(3):
            if index and text in self.gates:
                self.gates[text].wait(30)
            yield f"{text}/{index}".encode().ljust(32, b"\0"), 16000


async def speak(tts: TTSProcessor, sink: RecordingSink, sentences: list[str], turn_id: int = 1) -> None:
    for sentence in sentences:
        await tts.process(AgentText(sentence, turn_id))
    await tts.process(AgentTurnDone(turn_id))
    await sink.wait_for(lambda _: sink.has(AgentTurnDone, turn_id))


async def test_spoken_sentences_are_replayed_from_the_cache() -> None:
    cache = MemoryCache()
    engine = CountingEngine()
    tts = TTSProcessor(CachingSynthesizer(engine, cache))
    async with running(tts) as (sink, _):
        await speak(tts, sink, ["Hello, thanks for calling.", "How can I help?"])
    first_audio = [f.pcm for f in sink.of(OutputAudio)]
    await stored(cache, "tts", 2)

    ctx = CallContext(call_id="CA2")
    tts = TTSProcessor(CachingSynthesizer(engine, cache, ctx=ctx))
    async with running(tts, ctx=ctx) as (sink, _):
        await speak(tts, sink, ["Hello, thanks for calling.", "Something new."])
    assert engine.requests == ["Hello, thanks for calling.", "How can I help?", "Something new."]
    assert [f.pcm for f in sink.of(OutputAudio)][:3] == first_audio[:3]  # same chunks, same boundaries
    assert all(f.sample_rate == 16000 for f in sink.of(OutputAudio))
    usage = ctx.ledger.usage()
    assert usage.cache == {CacheKind.AUDIO: CacheUse(hits=1, misses=1)}
    assert usage.tts_chars == {"counting": len("Something new.")}  # the replayed sentence cost nothing


async def test_sentence_cut_short_by_barge_in_is_not_stored() -> None:
    cache = MemoryCache()
    engine = CountingEngine()
    gate = threading.Event()
    engine.gates["A long answer."] = gate
    tts = TTSProcessor(CachingSynthesizer(engine, cache))
    async with running(tts) as (sink, _):
        await tts.process(AgentText("A long answer.", 1))
        await sink.wait_for(lambda _: sink.has(OutputAudio, 1))
        await tts.process(Interruption(at=1.0))
        gate.set()
        await speak(tts, sink, ["Go ahead."], turn_id=2)
        await stored(cache, "tts", 1)
        await anyio.sleep(0.05)
    assert cache.stats("tts").sets == 1  # only "Go ahead."
    engine.gates.clear()
    tts = TTSProcessor(CachingSynthesizer(engine, cache))
    async with running(tts) as (sink, _):
        await speak(tts, sink, ["A long answer."])
    assert engine.requests.count("A long answer.") == 2


async def test_outside_a_worker_thread_the_wrapper_passes_through() -> None:
    engine = CountingEngine()
    wrapper = CachingSynthesizer(engine, MemoryCache(), voice="counting:v1")
    chunks = await anyio.to_thread.run_sync(lambda: list(wrapper.synthesize("Hi.", "en")))
    assert len(chunks) == 3
    assert [len(c) for c, _ in list(wrapper.synthesize("Hi.", "en"))] == [32, 32, 32]  # no loop reachable: no cache
    assert engine_voice_id(engine) == "counting"


async def test_a_resumed_call_has_no_context_free_first_turn() -> None:
    cache = MemoryCache()
    first = CachedAnswers(ScriptedModel(), cache, AnswerPolicy(AGENT))
    async with running(first) as (sink, _):
        await ask(first, sink, "Which day is best?")
        await stored(cache, "llm", 1)
    model = ScriptedModel()
    resumed = CachedAnswers(model, cache, AnswerPolicy(AGENT), resumed=True)
    async with running(resumed, "CA2") as (sink, _):
        await ask(resumed, sink, "Which day is best?")
    assert model.asked == ["Which day is best?"]
