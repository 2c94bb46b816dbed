"""The call journal writes each turn to the call store while the call runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from aybiza.agents import FAQ, AgentConfig
from aybiza.edge.answers import AnswerPolicy
from aybiza.edge.archive import SQLiteArchive
from aybiza.edge.cache import MemoryCache
from aybiza.edge.calls import CallStore
from aybiza.edge.records import CallRecord, TurnRecord
from aybiza.edge.state_sqlite import SQLiteState
from aybiza.pipeline import (
    AgentText,
    AgentTurnDone,
    CacheKind,
    CallContext,
    Frame,
    Interruption,
    Processor,
    QualityReport,
    Stage,
    UserTurn,
)
from aybiza.processors.cache import CachedAnswers
from aybiza.processors.journal import CallJournal

pytestmark = pytest.mark.anyio

AGENT = AgentConfig(
    id="dental", name="Dental", greeting="Hello.", system_prompt="Be brief.", fallback="Sorry?",
    faqs=(FAQ(id="hours", answer="Nine to five.", questions=("What are your opening hours?",)),),
)


class ScriptedModel(Processor):
    """Answers each caller turn with two sentences and a turn end."""

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, UserTurn):
            await self.push(AgentText(f"About {frame.text.lower().rstrip('?')}.", frame.turn_id))
            await self.push(AgentText("That is all.", frame.turn_id))
            await self.push(AgentTurnDone(frame.turn_id))
            return
        await self.push(frame)


class RecordingSink:
    """Records what reaches downstream."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    async def __call__(self, frame: Frame) -> None:
        self.frames.append(frame)

    def has(self, kind: type[Frame], turn_id: int) -> bool:
        return any(isinstance(f, kind) and getattr(f, "turn_id", None) == turn_id for f in self.frames)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CallStore]:
    opened = await CallStore(SQLiteState(tmp_path / "live.db"), SQLiteArchive(tmp_path / "archive.db")).open()
    yield opened
    await opened.aclose()


async def live_record(store: CallStore, call_id: str, turns: int) -> CallRecord:
    """The record as stored in the state backend once it holds ``turns`` turns."""
    with anyio.fail_after(10):
        while True:
            record = await store.state.read(call_id)
            if record is not None and len(record.turns) >= turns:
                return record
            await anyio.sleep(0.005)


async def test_turns_reach_the_store_during_the_call_and_the_archive_at_its_end(store: CallStore) -> None:
    cache = MemoryCache()
    journal = CallJournal(CachedAnswers(ScriptedModel(), cache, AnswerPolicy(AGENT)), store)
    sink = RecordingSink()
    journal.link(None)
    journal.push = sink
    ctx = CallContext(call_id="CA1", caller="+15550001")
    await store.open_call(ctx)  # the call's session opens the record before the stages start
    async with anyio.create_task_group() as tg:
        await journal.start(ctx, tg)
        await journal.process(AgentText("Hello, Harbor Lane Dental.", 0))
        await journal.process(AgentTurnDone(0))
        ctx.ledger.time(Stage.TTS_FIRST_BYTE, 0.11)  # the greeting's audio
        ctx.ledger.time(Stage.STT_FINAL, 0.21)  # the caller's first turn being recognised: turn 1's
        ctx.ledger.turn = 1  # what turn-taking does when the caller's turn ends
        await journal.process(QualityReport(score=0.9, tier="high"))
        await journal.process(UserTurn("What are your opening hours?", turn_id=1))
        assert sink.has(AgentTurnDone, 1)
        ctx.ledger.time(Stage.VOICE_TO_VOICE, 0.61)

        live = await live_record(store, "CA1", 2)  # written while the call runs: a crash keeps it
        assert [(t.turn_id, t.user, t.agent) for t in live.turns] == [
            (0, "", "Hello, Harbor Lane Dental."),
            (1, "What are your opening hours?", "About what are your opening hours. That is all."),
        ]
        assert live.status == "active" and live.quality["tier"] == "high"

        await journal.process(QualityReport(score=0.4, tier="low"))
        ctx.ledger.turn = 2
        await journal.process(UserTurn("Do you do implants?", turn_id=2))
        await journal.process(Interruption(at=1.0))
        assert sink.has(AgentTurnDone, 2)
        tg.cancel_scope.cancel()
    await journal.stop()

    record = await store.end_call(ctx, "hangup")
    turns = {t.turn_id: t for t in record.turns}
    assert turns[0].timings == {"tts_first_byte": 0.11}
    assert turns[1].timings == {"stt_final": 0.21, "voice_to_voice": 0.61}
    assert turns[2].interrupted and not turns[1].interrupted
    assert record.quality == {"score": 0.4, "tier": "low", "min_score": 0.4}
    assert record.outcome == "hangup" and record.status == "ended"
    assert record.timings == [("tts_first_byte", 0.11), ("stt_final", 0.21), ("voice_to_voice", 0.61)]
    assert await store.archive.get("CA1") == record


async def test_each_turn_is_one_store_write_carrying_the_previous_turns_late_latencies(store: CallStore) -> None:
    journal = CallJournal(ScriptedModel(), store)
    journal.link(None)
    journal.push = RecordingSink()
    ctx = CallContext(call_id="CA2")
    await store.open_call(ctx)
    start = (await live_record(store, "CA2", 0)).version
    async with anyio.create_task_group() as tg:
        await journal.start(ctx, tg)
        await journal.process(AgentText("Hello.", 0))
        await journal.process(AgentTurnDone(0))
        assert (await live_record(store, "CA2", 1)).version == start + 1
        ctx.ledger.time(Stage.TTS_FIRST_BYTE, 0.11)  # the greeting's audio, after its turn was written
        ctx.ledger.turn = 1
        await journal.process(UserTurn("Are you open?", turn_id=1))
        live = await live_record(store, "CA2", 2)
        assert live.version == start + 2, "the greeting's refresh went out with turn 1's answer, in one write"
        assert live.turns[0].timings == {"tts_first_byte": 0.11}
        tg.cancel_scope.cancel()
    await journal.stop()


async def test_cache_hits_are_marked_on_the_turn(store: CallStore) -> None:
    cache = MemoryCache()
    policy = AnswerPolicy(AGENT)
    for call_id in ("CA1", "CA2"):
        journal = CallJournal(CachedAnswers(ScriptedModel(), cache, policy), store)
        sink = RecordingSink()
        journal.link(None)
        journal.push = sink
        ctx = CallContext(call_id=call_id)
        await store.open_call(ctx)
        async with anyio.create_task_group() as tg:
            await journal.start(ctx, tg)
            await journal.process(UserTurn("What are your opening hours?", turn_id=1))
            assert sink.has(AgentTurnDone, 1)
            with anyio.fail_after(10):
                while True:  # the answer is stored off the frame path
                    if cache.stats("llm").sets >= 1:
                        break
                    await anyio.sleep(0.005)
            tg.cancel_scope.cancel()
        await journal.stop()
        await store.end_call(ctx, "hangup")
    first, second = await store.archive.get("CA1"), await store.archive.get("CA2")
    assert first is not None and second is not None
    assert first.turns[0].cached == [] and second.turns[0].cached == ["llm"]
    assert second.usage.cache_hits(CacheKind.ANSWER) == 1 and first.usage.cache_hits(CacheKind.ANSWER) == 0
    assert second.summary()["cache_hits"] == {"llm": 1} and first.summary()["cache_hits"] == {"llm": 0}


async def test_a_resumed_call_keeps_the_turns_of_the_process_before(tmp_path: Path, store: CallStore) -> None:
    await store.start(CallRecord(call_id="CA1"))
    await store.update("CA1", turn=TurnRecord(turn_id=0, agent="Hello."))
    await store.update("CA1", turn=TurnRecord(turn_id=1, user="Book a cleaning.", agent="Which day?"))
    other = await CallStore(SQLiteState(tmp_path / "live.db"), store.archive).open()
    ctx = CallContext(call_id="CA1")
    opened, resumed = await other.open_call(ctx)  # what the session does: the call is taken over
    assert resumed and len(opened.turns) == 2

    journal = CallJournal(ScriptedModel(), other, turn_offset=2)  # numbered after the turns on record
    sink = RecordingSink()
    journal.link(None)
    journal.push = sink
    async with anyio.create_task_group() as tg:
        await journal.start(ctx, tg)
        await journal.process(UserTurn("Tuesday.", turn_id=1))  # the new process counts from 1 again
        tg.cancel_scope.cancel()
    await journal.stop()
    record = await other.end_call(ctx, "hangup")
    assert [(t.turn_id, t.user) for t in record.turns] == [(0, ""), (1, "Book a cleaning."), (3, "Tuesday.")]
    await other.state.aclose()


async def test_a_call_whose_record_is_not_open_here_runs_without_a_journal(store: CallStore) -> None:
    journal = CallJournal(ScriptedModel(), store)
    sink = RecordingSink()
    journal.link(None)
    journal.push = sink
    ctx = CallContext(call_id="CAnot-opened")
    async with anyio.create_task_group() as tg:
        await journal.start(ctx, tg)
        await journal.process(UserTurn("Hello?", turn_id=1))
        tg.cancel_scope.cancel()
    await journal.stop()
    assert sink.has(AgentTurnDone, 1), "the call goes on"
    assert await store.state.read("CAnot-opened") is None
