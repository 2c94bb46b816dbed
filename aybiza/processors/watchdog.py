"""A caller's turn is never left unanswered, and a silent caller is not left hanging.

The watchdog sits after turn-taking and watches two things:

* **a late reply**: when no agent audio starts (the output steers
  ``AgentSpeaking(True)``) within ``reply_timeout_s`` of a caller's turn, the
  caller hears the agent's holding line ("One moment, please.", a
  :class:`~aybiza.pipeline.context.Notice` said in the local voice); if still
  nothing plays after as long again, the apology and "could you say that
  again?";
* **a silent caller**: when the caller says nothing for ``silence_s`` after
  the agent stopped talking, "Are you still there?"; after ``reprompts`` of
  those, the polite goodbye, heard in full, and the call ends with
  :attr:`~aybiza.errors.EndReason.CALLER_SILENT`.
"""

from __future__ import annotations

import anyio
from anyio.abc import TaskGroup

from ..errors import CallEnded, EndReason
from ..pipeline import AgentSpeaking, CallContext, Frame, Notice, Processor, SpeechStarted, UserTurn

__all__ = ["TurnWatchdog"]


class TurnWatchdog(Processor):
    """Holding line when a reply is late; reprompts, then a goodbye, when the caller stays silent."""

    __slots__ = ("reply_timeout_s", "silence_s", "reprompts", "_tg", "_timer", "_awaiting", "_announcing",
                 "_agent_speaking", "_silences")

    name = "watchdog"
    consumes = frozenset({UserTurn, SpeechStarted, AgentSpeaking})

    def __init__(self, *, reply_timeout_s: float = 3.0, silence_s: float = 10.0, reprompts: int = 2) -> None:
        super().__init__()
        self.reply_timeout_s = reply_timeout_s
        self.silence_s = silence_s
        self.reprompts = reprompts
        self._tg: TaskGroup | None = None
        self._timer: anyio.CancelScope | None = None
        self._awaiting = False  # a caller's turn has had no reply yet
        self._announcing = False
        self._agent_speaking = False
        self._silences = 0

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Bind the call; timers run in its task group."""
        await super().start(ctx, tg)
        self._tg = tg

    async def stop(self) -> None:
        """No more timers."""
        self._cancel()

    async def process(self, frame: Frame) -> None:
        """A caller's turn starts the reply timer; the caller speaking stops the silence timer."""
        if isinstance(frame, UserTurn):
            self._awaiting = True
            self._silences = 0
            self._arm(self._late_reply)
        elif isinstance(frame, SpeechStarted):
            self._silences = 0
            if not self._awaiting:
                self._cancel()
        await self.push(frame)

    async def control(self, frame: Frame) -> None:
        """Agent audio answers the turn; the agent falling silent starts the caller's silence timer."""
        if isinstance(frame, AgentSpeaking):
            self._agent_speaking = frame.speaking
            if frame.speaking and not self._announcing:
                self._awaiting = False  # the reply (or the agent going on): no silence counts while it talks
                self._cancel()
            elif not frame.speaking and not self._awaiting and not self._announcing:
                self._arm(self._silent_caller)
        await self.steer(frame)

    def _arm(self, waiter: object) -> None:
        self._cancel()
        if self._tg is not None:
            self._tg.start_soon(waiter)  # type: ignore[arg-type]

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _say(self, notice: Notice) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        self._announcing = True
        try:
            await ctx.announce(notice)
        finally:
            self._announcing = False

    async def _late_reply(self) -> None:
        with anyio.CancelScope() as scope:
            self._timer = scope
            await anyio.sleep(self.reply_timeout_s)
            if self.ctx is not None:
                self.ctx.log.info("watchdog: no reply after %.1f s, holding line", self.reply_timeout_s)
            await self._say(Notice.HOLD)
            await anyio.sleep(self.reply_timeout_s)
            if self._agent_speaking:
                self._awaiting = False  # the reply is playing (straight after the holding line)
                return
            if self.ctx is not None:
                self.ctx.log.warning("watchdog: still no reply; asking the caller to repeat")
            self._awaiting = False
            await self._say(Notice.RETRY)

    async def _silent_caller(self) -> None:
        with anyio.CancelScope() as scope:
            self._timer = scope
            await anyio.sleep(self.silence_s)
            self._silences += 1
            ctx = self.ctx
            if self._silences <= self.reprompts:
                if ctx is not None:
                    ctx.log.info("watchdog: caller silent for %.0f s, reprompt %d", self.silence_s, self._silences)
                await self._say(Notice.STILL_THERE)
                if not self._agent_speaking:  # already heard: count the next silence from now
                    self._arm(self._silent_caller)
                return
            if ctx is not None:
                ctx.log.info("watchdog: caller silent after %d reprompts, saying goodbye", self.reprompts)
            await self._say(Notice.GOODBYE)
            raise CallEnded(EndReason.CALLER_SILENT, f"no speech after {self.reprompts} reprompts")
