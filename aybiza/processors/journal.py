"""The call journal: writes each turn of a call to the call store as it happens.

:class:`CallJournal` wraps the model stage (usually the
:class:`~aybiza.processors.cache.CachedAnswers` around it), where it sees the
caller's turns going in and the agent's answers coming out. The call's
session opened the record (or resumed a call live in another process: then
this process's turns are numbered after those already recorded). The journal
writes every finished turn — what was said, its latencies, whether the cache
answered, whether the caller barged in — plus language, usage and quality,
so a crash loses at most the turn in progress. A store failure is logged
and never ends the call.

Latencies and tool calls come from the call's ledger, which tags every
sample and call with its turn; a turn's record is refreshed when the next
turn starts and when the call stops, so the stages that finish after the
model (first audio, voice-to-voice) and a tool that outlives its turn are
in it. The store is written once per turn (a refreshed turn goes out with the
next turn's answer, in the same snapshot). What is written is redacted by the ledger: digits the caller typed
into a collection are masked wherever they appear.
"""

from __future__ import annotations

from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..edge.calls import CallStore
from ..edge.records import TurnRecord
from ..edge.state import CallStateError
from ..pipeline import (
    AgentText,
    AgentTurnDone,
    CacheKind,
    CallContext,
    CallLedger,
    Frame,
    Interruption,
    Processor,
    QualityReport,
    UserTurn,
)
from ..pipeline.ledger import FAILOVER_AT
from .cache import WrappingProcessor

__all__ = ["CallJournal"]


class CallJournal(WrappingProcessor):
    """Records the turns of a call in a :class:`CallStore` (wraps the model stage)."""

    name = "journal"

    def __init__(self, model: Processor, store: CallStore, *, turn_offset: int = 0) -> None:
        super().__init__(model)
        self.store = store
        self._offset = turn_offset
        self._turns: dict[int, TurnRecord] = {}  # by the pipeline's turn id
        self._current: int | None = None
        self._audio_hits = 0
        self._quality: dict[str, Any] = {}
        self._dirty: dict[int, TurnRecord] = {}  # turns to write, in the order they became due
        self._writing = anyio.Lock()
        self._flush_started = False  # a flush task is on its way: more dirty turns ride along
        self._ok = True

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Start the model; the session has opened the call's record."""
        await super().start(ctx, tg)
        self._ok = ctx.call_id in self.store.owned
        if not self._ok:
            ctx.log.warning("call journal off for this call: its record is not open here")

    async def stop(self) -> None:
        """Stop the model, then write the last turns with all their latencies (shielded from cancellation)."""
        await super().stop()
        with anyio.CancelScope(shield=True):
            for turn_id in list(self._turns)[-2:]:
                self._refresh(turn_id)
                self._dirty[turn_id] = self._turns[turn_id]
            await self._flush()

    async def process(self, frame: Frame) -> None:
        """Note caller turns, barge-ins and quality; hand everything to the model."""
        if isinstance(frame, UserTurn) and frame.text.strip():
            previous = self._current
            answered = self._turns.get(frame.turn_id)
            if answered is not None and not answered.user:
                # A preemptive reply went out before the turn-taker's turn (aybiza.processors.preempt): keep it.
                answered.user, answered.language = frame.text, frame.language
                self._dirty[frame.turn_id] = answered
                previous = previous if previous != frame.turn_id else None
            else:
                self._turns[frame.turn_id] = TurnRecord(turn_id=frame.turn_id + self._offset, user=frame.text,
                                                        language=frame.language)
            self._current = frame.turn_id
            if previous is not None:
                # Its late latencies are in now; it is written with this turn's answer (or at stop).
                self._refresh(previous)
                self._dirty[previous] = self._turns[previous]
        elif isinstance(frame, Interruption) and self._current is not None:
            self._turns[self._current].interrupted = True
        elif isinstance(frame, QualityReport):
            low = self._quality.get("min_score", frame.score)
            self._quality = {"score": frame.score, "tier": frame.tier, "min_score": min(low, frame.score)}
        await self.inner.process(frame)

    async def from_inner(self, frame: Frame) -> None:
        """Pass the answer on, then record it; write the turn when the answer is complete."""
        await self.push(frame)
        if isinstance(frame, AgentText):
            turn = self._turns.get(frame.turn_id)
            if turn is None:  # the greeting (turn 0) or a turn the journal did not see arrive
                turn = TurnRecord(turn_id=frame.turn_id + self._offset, language=frame.language)
                self._turns[frame.turn_id] = turn
                if self._current is None:
                    self._current = frame.turn_id
            turn.agent = f"{turn.agent} {frame.text}".strip()
        elif isinstance(frame, AgentTurnDone) and frame.turn_id in self._turns:
            self._refresh(frame.turn_id)
            self._schedule(frame.turn_id)

    def _refresh(self, turn_id: int) -> None:
        """Copy the turn's latencies and cache use from the ledger."""
        ctx, turn = self.ctx, self._turns.get(turn_id)
        if ctx is None or turn is None:
            return
        ledger = ctx.ledger
        turn.timings = ledger.timings(turn_id)
        if (failed_over := ledger.failover_at(turn_id)) is not None:
            turn.timings[FAILOVER_AT] = failed_over  # the console's timeline places the failover
        turn.tool_calls = ledger.tool_uses(turn_id)
        if ledger.turn_cache_hits(CacheKind.ANSWER, turn_id) and "llm" not in turn.cached:
            turn.cached.append("llm")
        audio_hits = ledger.cache_hits(CacheKind.AUDIO)
        if audio_hits > self._audio_hits and "tts" not in turn.cached:
            turn.cached.append("tts")  # the audio cache spoke (some of) this turn's answer
        self._audio_hits = audio_hits

    def _schedule(self, turn_id: int) -> None:
        """Write the turn soon, off the frame path (writes stay in order; stop() writes what is left)."""
        self._dirty[turn_id] = self._turns[turn_id]
        if self.tg is not None and not self._flush_started:
            self._flush_started = True
            self.tg.start_soon(self._flush)

    async def _flush(self) -> None:
        """Write every dirty turn, in one snapshot per pass."""
        async with self._writing:
            self._flush_started = False
            while self._dirty:
                turns = list(self._dirty.values())
                self._dirty.clear()
                await self._write(turns)

    async def _write(self, turns: list[TurnRecord]) -> None:
        ctx = self.ctx
        if not self._ok or ctx is None:
            return
        changes: dict[str, Any] = {"language": ctx.language, "usage": ctx.ledger.usage()}
        if self._quality:
            changes["quality"] = dict(self._quality)
        ledger = ctx.ledger
        written = [_snapshot(turn, ledger) for turn in turns]
        try:
            await self.store.update(ctx.call_id, turn=written, **changes)
        except CallStateError as error:
            self._ok = False
            ctx.log.warning("call journal stopped: %s", error)


def _snapshot(turn: TurnRecord, ledger: CallLedger) -> TurnRecord:
    """A redacted copy the journal's later changes to ``turn`` do not reach."""
    return turn.model_copy(deep=True, update={"user": ledger.redact(turn.user), "agent": ledger.redact(turn.agent)})
