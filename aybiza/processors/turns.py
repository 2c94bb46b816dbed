"""Turn-taking: when the caller's turn ends, and barge-in.

The VAD stage says when speech starts and stops; the STT stage says what
was said. A turn ends at the first final transcript after the caller
stopped speaking (or, if the recogniser sent its finals earlier, after a
short grace period). Speech that starts while the caller hears the agent
(the output steers :class:`AgentSpeaking` up the control path) is a
barge-in: an :class:`Interruption` goes downstream *before* the
``SpeechStarted``, so model, TTS and output drop the agent's reply at once.
"""

from __future__ import annotations

import anyio
from anyio.abc import TaskGroup

from ..pipeline import (
    DTMF,
    AgentSpeaking,
    CallContext,
    Frame,
    Interruption,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    UserTurn,
)

__all__ = ["TurnTaker"]


class TurnTaker(Processor):
    """Aggregates final transcripts into user turns and raises barge-in."""

    name = "turns"
    consumes = frozenset({SpeechStarted, SpeechStopped, Transcript, DTMF, AgentSpeaking})
    produces = frozenset({UserTurn, Interruption})

    def __init__(self, *, final_grace_s: float = 0.3, final_timeout_s: float = 5.0, barge_in: bool = True) -> None:
        super().__init__()
        self.final_grace_s = final_grace_s
        self.final_timeout_s = final_timeout_s
        self.barge_in = barge_in
        self._parts: list[str] = []
        self._language = "en"
        self._speaking = False
        self._agent_speaking = False
        self._stopped_at: float | None = None
        self._turn_id = 0
        self._deadline: anyio.CancelScope | None = None
        self._tg: TaskGroup | None = None

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        await super().start(ctx, tg)
        self._tg = tg
        self._language = ctx.language

    async def control(self, frame: Frame) -> None:
        """Track whether the caller hears the agent (what makes speech a barge-in)."""
        if isinstance(frame, AgentSpeaking):
            self._agent_speaking = frame.speaking
        await self.steer(frame)

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, SpeechStarted):
            await self._speech_started(frame)
        elif isinstance(frame, SpeechStopped):
            self._speaking = False
            self._stopped_at = frame.at
            await self.push(frame)
            self._arm(self.final_grace_s if self._parts else self.final_timeout_s)
        elif isinstance(frame, Transcript):
            await self.push(frame)
            if frame.final and frame.text.strip():
                self._parts.append(frame.text.strip())
                self._language = frame.language
                if not self._speaking:
                    await self._end_turn()
        elif isinstance(frame, DTMF):
            if self.ctx is not None:
                self.ctx.digits += frame.digit
                self.ctx.log.debug("caller pressed a key")
            await self.push(frame)
        else:
            await self.push(frame)

    async def _speech_started(self, frame: SpeechStarted) -> None:
        self._speaking = True
        self._disarm()
        ctx = self.ctx
        if self.barge_in and ctx is not None and self._agent_speaking:
            self._agent_speaking = False
            ctx.log.info("barge-in: caller spoke over the agent")
            ctx.ledger.interruptions += 1
            await self.push(Interruption(at=frame.at))
        await self.push(frame)

    async def _end_turn(self) -> None:
        self._disarm()
        text = " ".join(self._parts)
        self._parts = []
        ended_at = self._stopped_at
        self._stopped_at = None
        if not text:
            return
        self._turn_id += 1
        if self.ctx is not None:
            self.ctx.user_turn_ended_at = ended_at
            self.ctx.ledger.turn = self._turn_id
            self.ctx.log.info("caller turn %d (%d words)", self._turn_id, len(text.split()))
        await self.push(UserTurn(text=text, turn_id=self._turn_id, language=self._language,
                                 speech_ended_at=ended_at))

    def _arm(self, delay: float) -> None:
        self._disarm()
        if self._tg is not None:
            self._tg.start_soon(self._expire, delay)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    async def _expire(self, delay: float) -> None:
        with anyio.CancelScope() as scope:
            self._deadline = scope
            await anyio.sleep(delay)
            self._deadline = None
            if not self._speaking:
                if not self._parts and self.ctx is not None:
                    self.ctx.log.debug("speech without a transcript; no turn")
                    self._stopped_at = None
                    return
                await self._end_turn()
