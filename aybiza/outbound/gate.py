"""An outbound call's opening waits for Twilio's answering-machine verdict.

Placed after turn-taking (before the watchdog and the model), the gate holds
the agent's greeting and drops the callee's turns until the verdict comes:
a machine's recorded greeting is never answered, and the person who says
"Hello?" is answered by the greeting itself. What the callee hears meanwhile
is silence — at most ``AYBIZA_AMD_WAIT_S``; Twilio decides on a person about
a second after they stop speaking.

* **person** (``human``, ``unknown``, or no verdict in time): the held
  greeting goes on and the call is a conversation like any other;
* **machine** (``machine_end_*``: its greeting and beep are over): the
  agent's ``voicemail`` message, in the call's language, is spoken and heard
  to its end (noise on the line does not barge in); then the call ends ``voicemail``. A verdict that comes after
  the greeting was let go (the wait ran out) cuts the greeting off first;
* **fax**: the call ends ``fax`` at once.

The verdict is kept on the call (``answered_by``) for its record.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from ..agents import AgentConfig
from ..errors import CallEnded, EndReason
from ..pipeline import (
    AgentResume,
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    Interruption,
    Processor,
    UserTurn,
)
from ..processors.watchdog import TurnWatchdog
from .amd import Answer, classify_answer

if TYPE_CHECKING:  # annotations only: the session imports this module
    from ..session.actions import SessionActions
    from .registry import OutboundCall, OutboundCalls

__all__ = ["AnsweringMachineGate", "with_amd_gate"]


class AnsweringMachineGate(Processor):
    """Holds the greeting and drops the callee's turns until the AMD verdict; then the conversation or voicemail."""

    __slots__ = ("call", "agent", "actions", "wait_s", "_state", "_held", "_greeted_at")

    name = "amd_gate"
    consumes = frozenset({UserTurn, AgentText, AgentTurnDone})
    produces = frozenset({AgentText, AgentTurnDone, Interruption})

    def __init__(self, call: OutboundCall, agent: AgentConfig, actions: SessionActions, *, wait_s: float) -> None:
        super().__init__()
        self.call = call
        self.agent = agent
        self.actions = actions
        self.wait_s = wait_s
        self._state = "pending"  # pending -> person | machine
        self._held: list[Frame] = []
        self._greeted_at = 0.0

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Wait for the verdict in the call's task group."""
        await super().start(ctx, tg)
        tg.start_soon(self._follow_verdict)

    async def process(self, frame: Frame) -> None:
        """Hold the greeting while pending; drop the callee's turns unless a person is on the line."""
        if self._state == "pending" and isinstance(frame, (AgentText, AgentTurnDone)):
            self._held.append(frame)
            return
        if self._state == "machine" and isinstance(frame, (Interruption, AgentResume)):
            return  # a machine's noise does not cut the message it is recording
        if isinstance(frame, UserTurn) and (self._state != "person" or (
                frame.speech_ended_at is not None and frame.speech_ended_at < self._greeted_at)):
            return  # a machine's greeting, or a person's "hello?" said before we knew: the greeting answers it
        await self.push(frame)

    async def _follow_verdict(self) -> None:
        call, ctx = self.call, self.ctx
        assert ctx is not None
        with anyio.move_on_after(self.wait_s):
            await call.verdict.wait()
        if not call.verdict.is_set():
            ctx.log.info("no answering-machine verdict in %g s: greeting as to a person", self.wait_s)
            await self._let_go()
            await call.verdict.wait()  # a machine found later still gets the message
        ctx.custom["answered_by"] = call.answered_by
        course = classify_answer(call.answered_by)
        ctx.log.info("answered by %s: %s", call.answered_by, course)
        if course is Answer.PERSON:
            if self._state == "pending":
                await self._let_go()
            return
        if course is Answer.HANG_UP:
            self._end(EndReason.FAX, "answered by a fax machine")
        await self._leave_voicemail()

    async def _let_go(self) -> None:
        """A person (or nobody knows): the held greeting goes on."""
        self._state, self._greeted_at = "person", time.monotonic()
        held, self._held = self._held, []
        for frame in held:
            await self.push(frame)

    async def _leave_voicemail(self) -> None:
        ctx, tap = self.ctx, self.actions.tap
        assert ctx is not None
        greeted = self._state == "person"
        self._state, self._held = "machine", []
        barge_ins = tap.barge_ins
        if greeted:  # the greeting started before the verdict: cut it off (the tap counts it before the message)
            await self.push(Interruption(at=time.monotonic()))
            barge_ins += 1
        # In the greeting's place (turn 0): the record shows the message as what the agent said.
        await self.push(AgentText(self.agent.text("voicemail", ctx.language), turn_id=0,
                                  language=self.agent.reply_language(ctx.language)))
        await self.push(AgentTurnDone(0))
        await self.actions.played(0, barge_ins, 1)
        self._end(EndReason.VOICEMAIL, f"voicemail left (answered by {self.call.answered_by})")

    def _end(self, reason: EndReason, detail: str) -> None:
        self.actions.ending = (reason, detail)  # a provider's stop racing our hang-up keeps this reason
        raise CallEnded(reason, detail)


def with_amd_gate(calls: OutboundCalls, ctx: CallContext, agent: AgentConfig, processors: list[Processor],
                  actions: SessionActions, *, wait_s: float) -> list[Processor]:
    """``processors`` with the gate before the watchdog when ``ctx`` is an outbound call of ours; else unchanged."""
    call = calls.started(ctx.call_id) if ctx.transport == "twilio" else None
    if call is None:
        return processors
    ctx.custom["direction"] = "outbound"
    at = next((i for i, stage in enumerate(processors) if isinstance(stage, TurnWatchdog)), len(processors) - 2)
    return [*processors[:at], AnsweringMachineGate(call, agent, actions, wait_s=wait_s), *processors[at:]]
