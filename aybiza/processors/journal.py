"""The call journal: writes each turn of a call to the call store as it happens.

:class:`CallJournal` wraps the model stage (usually the
:class:`~aybiza.processors.cache.CachedAnswers` around it), where it sees the
caller's turns going in and the agent's answers coming out. It opens the
call's record with :meth:`CallStore.open_call` (start it, or resume a call
live in another process — then this process's turns are numbered after those
already recorded) and writes every finished turn — what was said, its
latencies, whether the cache answered, whether the caller barged in — plus
language, usage and quality, so a crash loses at most the turn in progress.
A store failure is logged and never ends the call.

Latencies are grouped per turn from ``ctx.timings``: ``stt_*`` samples taken
before a turn belong to it; everything else taken after a turn arrived (model,
TTS, voice-to-voice) belongs to it until the next turn arrives. Each stage's
first sample in a turn is kept.
"""

from __future__ import annotations

from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..edge.calls import CallStore
from ..edge.records import CACHE_HIT_PREFIX, TurnRecord
from ..edge.state import CallStateError
from ..pipeline import (
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    Interruption,
    Processor,
    QualityReport,
    UserTurn,
)
from .cache import WrappingProcessor

__all__ = ["CallJournal"]


class CallJournal(WrappingProcessor):
    """Records the turns of a call in a :class:`CallStore` (wraps the model stage)."""

    name = "journal"

    def __init__(self, model: Processor, store: CallStore) -> None:
        super().__init__(model)
        self.store = store
        self._turns: dict[int, TurnRecord] = {}
        self._current: TurnRecord | None = None
        self._mark = 0
        self._hits_at_turn = 0.0
        self._tts_mark = 0.0
        self._quality: dict[str, Any] = {}
        self._dirty: dict[int, TurnRecord] = {}
        self._writing = anyio.Lock()
        self._offset = 0
        self._ok = False

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Open the call's record (start or resume it, unless the store owns it already)."""
        await super().start(ctx, tg)
        try:
            if ctx.call_id in self.store.owned:  # opened (maybe resumed) by the server already
                record = await self.store.get(ctx.call_id)
            else:
                record, _ = await self.store.open_call(ctx)
        except CallStateError as error:
            ctx.log.warning("call journal off for this call: %s", error)
            return
        if record is not None and record.turns:
            # A resumed call: number this process's turns after the ones already recorded.
            self._offset = max(t.turn_id for t in record.turns) + 1
        self._ok = True

    async def stop(self) -> None:
        """Stop the model, then write the last turn with all its latencies (shielded from cancellation)."""
        await super().stop()
        with anyio.CancelScope(shield=True):
            self._take_timings(None)
            if self._current is not None:
                self._dirty[self._current.turn_id] = self._current
            await self._flush()

    async def process(self, frame: Frame) -> None:
        """Note caller turns, barge-ins and quality; hand everything to the model."""
        if isinstance(frame, UserTurn) and frame.text.strip():
            previous = self._current
            self._current = TurnRecord(turn_id=frame.turn_id + self._offset, user=frame.text,
                                       language=frame.language)
            self._turns[frame.turn_id] = self._current
            self._take_timings(previous)
            if previous is not None:
                self._schedule(previous)
            self._hits_at_turn = self._llm_hits()
        elif isinstance(frame, Interruption) and self._current is not None:
            self._current.interrupted = True
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
                    self._current = turn
            turn.agent = f"{turn.agent} {frame.text}".strip()
        elif isinstance(frame, AgentTurnDone):
            turn = self._turns.get(frame.turn_id)
            if turn is None:
                return
            if self._llm_hits() > self._hits_at_turn and "llm" not in turn.cached:
                turn.cached.append("llm")
            self._schedule(turn)

    def _llm_hits(self) -> float:
        return self.ctx.usage.get(CACHE_HIT_PREFIX + "llm", 0.0) if self.ctx is not None else 0.0

    def _take_timings(self, previous: TurnRecord | None) -> None:
        """Move the samples since the last mark to ``previous`` (or the current turn) and the new turn."""
        ctx = self.ctx
        if ctx is None:
            return
        samples = ctx.timings[self._mark:]
        self._mark = len(ctx.timings)
        current = self._current
        before = previous if previous is not None else current
        for stage, seconds in samples:
            target = current if stage.startswith("stt_") and previous is not None else before
            if target is not None:
                target.timings.setdefault(stage, round(seconds, 6))
        tts_hits = ctx.usage.get(CACHE_HIT_PREFIX + "tts", 0.0)
        if before is not None and tts_hits > self._tts_mark and "tts" not in before.cached:
            before.cached.append("tts")  # the TTS cache spoke (some of) this turn's answer
        self._tts_mark = tts_hits

    def _schedule(self, turn: TurnRecord) -> None:
        """Write ``turn`` soon, off the frame path (writes stay in order; stop() writes what is left)."""
        self._dirty[turn.turn_id] = turn
        if self.tg is not None:
            self.tg.start_soon(self._flush)

    async def _flush(self) -> None:
        async with self._writing:
            while self._dirty:
                turn_id = next(iter(self._dirty))
                await self._write(self._dirty.pop(turn_id))

    async def _write(self, turn: TurnRecord) -> None:
        ctx = self.ctx
        if not self._ok or ctx is None:
            return
        changes: dict[str, Any] = {"language": ctx.language, "usage": dict(ctx.usage)}
        if self._quality:
            changes["quality"] = dict(self._quality)
        try:
            await self.store.update(ctx.call_id, turn=turn.model_copy(deep=True), **changes)
        except CallStateError as error:
            self._ok = False
            ctx.log.warning("call journal stopped: %s", error)
