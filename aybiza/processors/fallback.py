"""A stage with a fallback: when the provider behind it fails, a local one takes its place for the rest of the call.

:class:`FallbackStage` runs a *primary* stage (Deepgram's recogniser, Aura's
voice) in a task group of its own, so a failure of the primary's background
work (a socket that cannot be reopened, a refused key) does not end the call:
the stage catches the :class:`~aybiza.errors.ProviderError`, records an
incident on the call's ledger, builds the *backup* (the embedded recogniser,
the local voice), replays what the primary had been given and not yet
finished with, and asks the call to say its apology in the local voice. From
then on frames go to the backup.

What is replayed is the caller's utterance in progress (audio since the
last ``SpeechStarted`` that has no final transcript yet) for a recogniser,
and the agent's text of turns whose audio is not finished for a voice:
nothing the caller said is lost and nothing the agent meant to say is
skipped. If the backup fails too, the call ends with the stage's typed
reason (``STT_UNAVAILABLE``, ``TTS_UNAVAILABLE``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ..errors import CallEnded, EndReason, ProviderError
from ..pipeline import (
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    IncidentKind,
    InputAudio,
    Interruption,
    Notice,
    OutputAudio,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Transcript,
)

__all__ = ["FallbackStage", "Replay"]

_MAX_REPLAY_FRAMES = 1500  # 30 s of 20 ms audio: an utterance longer than that is cut anyway


class Replay(enum.Enum):
    """What the backup is given when it takes over."""

    UTTERANCE = "utterance"  # a recogniser: the caller's audio since the last SpeechStarted not yet transcribed
    AGENT_TEXT = "agent_text"  # a voice: the agent's text of turns not yet spoken in full


class FallbackStage(Processor):
    """``primary`` until it fails with a provider error, then ``backup()`` for the rest of the call."""

    name = "fallback"

    def __init__(
        self,
        primary: Processor,
        backup: Callable[[], Processor],
        *,
        replay: Replay,
        incident: IncidentKind,
        unavailable: EndReason,
    ) -> None:
        super().__init__()
        self.primary = primary
        self.active = primary
        self._make_backup = backup
        self._replay_kind = replay
        self._incident = incident
        self._unavailable = unavailable
        # What the backup would be given: frames, or an InputAudio's fields (see _remember).
        self._pending: list[Frame | tuple[bytes, int, float, bool | None, bytes | None]] = []
        self._switching = anyio.Event()
        self._switched = False
        self._tg: TaskGroup | None = None
        self.name = f"{primary.name}+fallback"
        self.consumes = primary.consumes  # type: ignore[misc]
        self.produces = primary.produces  # type: ignore[misc]
        self.steers = primary.steers  # type: ignore[misc]
        primary.push = self._from_primary
        primary.steer = self._steer_up

    @property
    def switched(self) -> bool:
        """Whether the backup has taken over."""
        return self._switched

    def link(self, downstream: Processor | None) -> None:
        super().link(downstream)
        self.primary.push = self._from_primary

    async def _steer_up(self, frame: Frame) -> None:
        await self.steer(frame)

    async def _push_down(self, frame: Frame) -> None:
        await self.push(frame)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        await super().start(ctx, tg)
        self._tg = tg
        try:
            await tg.start(self._supervise, self.primary, False)
        except ProviderError as error:  # failed while starting: the backup starts instead
            await self._switch(error)

    async def stop(self) -> None:
        await self.primary.stop()
        if self.active is not self.primary:
            await self.active.stop()

    async def _supervise(self, stage: Processor, is_backup: bool, *, task_status: TaskStatus[None]) -> None:
        """Run ``stage``'s background work in a group of its own; a provider failure switches (or ends)."""
        assert self.ctx is not None
        started = False
        try:
            async with anyio.create_task_group() as group:
                await stage.start(self.ctx, group)
                started = True
                task_status.started()
                await anyio.sleep_forever()
        except* ProviderError as failures:
            error = failures.exceptions[0]
            if is_backup:
                raise CallEnded(self._unavailable, f"{stage.name} failed too: {error}") from error
            await self._switch(error)
            if not started:  # the primary failed in start(): the backup stands in, so this stage has started
                task_status.started()

    # -- frames -------------------------------------------------------------------------

    async def process(self, frame: Frame) -> None:
        if not self._switched:
            self._remember(frame)
            try:
                await self.primary.process(frame)
                return
            except ProviderError as error:
                await self._switch(error)
                return  # the frame was remembered: the replay hands it to the backup
        if not self._switching.is_set():
            await self._switching.wait()  # the backup is starting; the replay goes first
        await self.active.process(frame)

    async def control(self, frame: Frame) -> None:
        await self.active.control(frame)

    async def _from_primary(self, frame: Frame) -> None:
        """What the primary produced; forget what it has finished with."""
        if type(frame) is OutputAudio:  # the bulk of what a voice pushes: nothing to forget
            pass
        elif self._replay_kind is Replay.UTTERANCE and isinstance(frame, Transcript) and frame.final:
            self._pending.clear()
        elif self._replay_kind is Replay.AGENT_TEXT and isinstance(frame, AgentTurnDone):
            self._pending = [f for f in self._pending if getattr(f, "turn_id", None) != frame.turn_id]
        if not self._switched:
            await self.push(frame)

    def _remember(self, frame: Frame) -> None:
        if self._replay_kind is Replay.UTTERANCE:
            pending = self._pending
            if type(frame) is InputAudio:
                # Every voiced frame passes here: kept as its fields, which the garbage collector stops
                # tracking (a frame object would be tracked, and promoted, until the final transcript).
                if pending and len(pending) < _MAX_REPLAY_FRAMES:
                    pending.append((frame.pcm, frame.sample_rate, frame.captured_at, frame.voiced, frame.ulaw))
            elif isinstance(frame, SpeechStarted):
                self._pending = [frame]
            elif isinstance(frame, InputAudio | SpeechStopped) and pending:
                if len(pending) < _MAX_REPLAY_FRAMES:
                    pending.append(frame)
        elif isinstance(frame, AgentText | AgentTurnDone):
            self._pending.append(frame)
        elif isinstance(frame, Interruption):
            self._pending.clear()

    async def _switch(self, error: BaseException) -> None:
        """Put the backup in the primary's place, replay, and apologise (once)."""
        if self._switched:
            await self._switching.wait()
            return
        self._switched = True
        ctx, tg = self.ctx, self._tg
        assert ctx is not None and tg is not None
        detail = f"{self.primary.name}: {type(error).__name__}: {error}"
        ctx.log.warning("%s failed; the fallback takes over: %s", self.primary.name, detail)
        ctx.ledger.incident(self._incident, detail)
        try:
            backup = self._make_backup()
            backup.push = self._push_down
            backup.steer = self._steer_up
            await tg.start(self._supervise, backup, True)
        except ProviderError as failure:
            raise CallEnded(self._unavailable, f"{detail}; the fallback failed: {failure}") from failure
        self.active = backup
        pending, self._pending = self._pending, []
        for kept in pending:
            await backup.process(InputAudio(*kept) if isinstance(kept, tuple) else kept)
        self._switching.set()
        await ctx.announce(Notice.APOLOGY)
