"""What the agent does to its own call: wait until a line was heard, transfer, end the call, play tones.

:class:`SessionActions` is the call's :class:`~aybiza.tools.toolbox.CallActions`,
made by its :class:`~aybiza.session.session.CallSession` over the transport:

* **heard** — :class:`HeardTap` sits just before the transport's output and
  counts each turn's ``AgentTurnDone`` (the voice has handed over all of an
  utterance's audio) between two barge-ins (every ``Interruption`` reaching
  the output passes the model stage first, so both count the same barge-ins);
  :meth:`SessionActions.played` waits for the count and then for the
  transport to drain (the caller has heard it). A later barge-in releases the
  wait: the utterances queued before it were dropped, and what the caller
  heard is what they heard.
* **cold transfer** — the call control's transfer (``<Dial>``); the call
  ends ``transferred``.
* **warm transfer** — the colleague is rung on a second leg; while it rings
  the caller hears a hold tune from us (no silence, and the call stays ours
  if nobody answers: the model is told and tells the caller). Once the
  colleague answers (they hear the brief, then start a conference named
  after the call) the caller is moved into that conference; the call ends
  ``transferred``.
* **end the call** — ``agent_ended``; closing the stream hangs up (nothing
  follows ``<Connect>``).
* **play** — audio straight to the output (DTMF tones), waited until heard.

An end the agent caused (transfer, hang-up) is noted before the provider is
asked, so that when the provider's ``stop`` races our own end, the call is
still recorded for what it was (:attr:`SessionActions.ending`).
"""

from __future__ import annotations

import time
from typing import NoReturn

import anyio

from ..errors import CallEnded, EndReason, ProviderError
from ..pipeline import AgentTurnDone, CallContext, Frame, Interruption, OutputAudio, Processor
from ..tools.tones import hold_tune
from .transport import LEG_ENDED, CallControl, CallTransport

__all__ = ["HeardTap", "SessionActions"]

_CHUNK_S = 0.1
_HOLD_AHEAD_S = 0.6  # hold audio sent ahead of playback (a barge-in clears at most this much)
_POLL_S = 0.5
_ANSWER_GRACE_S = 3.0  # past the ring time: the provider's own no-answer should have come by then
_PLAYED_TIMEOUT_S = 30.0


class HeardTap(Processor):
    """Before the output: counts each turn's ``AgentTurnDone`` between barge-ins, for waiting on them."""

    name = "heard"

    def __init__(self) -> None:
        super().__init__()
        self._ended: dict[tuple[int, int], int] = {}  # (turn, barge-ins before) -> utterances ended
        self.barge_ins = 0
        self._changed = anyio.Event()

    async def process(self, frame: Frame) -> None:
        await self.push(frame)
        if isinstance(frame, AgentTurnDone):
            key = (frame.turn_id, self.barge_ins)
            self._ended[key] = self._ended.get(key, 0) + 1
            self._notify()
        elif isinstance(frame, Interruption):
            self.barge_ins += 1
            self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def reached(self, turn_id: int, barge_ins: int, utterances: int) -> None:
        """Return once ``utterances`` of ``turn_id`` ended after ``barge_ins`` barge-ins, or another came."""
        while self._ended.get((turn_id, barge_ins), 0) < utterances and self.barge_ins <= barge_ins:
            await self._changed.wait()


class SessionActions:
    """One call's actions, over its transport (and its call control, when it has one)."""

    def __init__(self, ctx: CallContext, transport: CallTransport) -> None:
        self.ctx = ctx
        self.transport = transport
        self.tap = HeardTap()
        self.ending: tuple[EndReason, str] | None = None
        """The end the agent caused, once it asked for it (a transfer, a hang-up)."""
        self._played = 0

    @property
    def can_transfer(self) -> bool:
        """Whether the transport has working call control."""
        control = self.transport.control
        return control is not None and control.available

    def _control(self) -> CallControl:
        control = self.transport.control
        if control is None or not control.available:
            raise ProviderError("this call has no call control", provider="call-control")
        return control

    async def played(self, turn_id: int, barge_ins: int, utterances: int) -> None:
        """Return once the caller heard the turn's utterances (see :class:`HeardTap`; bounded wait)."""
        with anyio.move_on_after(_PLAYED_TIMEOUT_S):
            await self.tap.reached(turn_id, barge_ins, utterances)
            await self.transport.drained()

    async def transfer(self, target: str) -> NoReturn:
        """Cold transfer to ``target``; the call ends ``transferred``."""
        control = self._control()
        self.ending = (EndReason.TRANSFERRED, f"transferred to {target}")
        try:
            await control.transfer(target)
        except BaseException:
            self.ending = None
            raise
        raise CallEnded(*self.ending)

    async def warm_transfer(self, target: str, brief: str, *, ring_s: float) -> str:
        """Ring ``target``, brief them, bridge the caller in (raises ``CallEnded``); else why not."""
        control, ctx = self._control(), self.ctx
        room = f"aybiza-{ctx.call_id}"
        leg = await control.call_leg(target, brief=brief, room=room, ring_s=ring_s)
        ctx.log.info("warm transfer: ringing %s", target)
        status = "queued"
        async with anyio.create_task_group() as hold:
            hold.start_soon(self._hold)
            deadline = time.monotonic() + ring_s + _ANSWER_GRACE_S
            while status not in LEG_ENDED and status != "in-progress" and time.monotonic() < deadline:
                await anyio.sleep(_POLL_S)
                try:
                    status = await control.leg_status(leg)
                except ProviderError as error:  # one failed poll is not the end of the transfer
                    ctx.log.warning("warm transfer: status of the second leg unknown: %s", error)
            hold.cancel_scope.cancel()
        await self.transport.output.process(Interruption(at=time.monotonic()))  # the hold tune stops now
        if status != "in-progress":
            if status not in LEG_ENDED:
                try:
                    await control.end_leg(leg, ringing=True)
                except ProviderError as error:
                    ctx.log.warning("warm transfer: the unanswered leg was not hung up: %s", error)
            return f"{target} did not answer ({status})"
        self.ending = (EndReason.TRANSFERRED, f"warm transfer to {target}")
        try:
            await control.join_conference(room)
        except BaseException:
            self.ending = None
            raise
        raise CallEnded(*self.ending)

    async def end_call(self, detail: str) -> NoReturn:
        """The agent hangs up."""
        self.ending = (EndReason.AGENT_ENDED, detail)
        raise CallEnded(*self.ending)

    async def play(self, pcm: bytes, sample_rate: int) -> None:
        """Send ``pcm`` to the caller now, as its own utterance; return once heard (bounded)."""
        self._played += 1
        turn_id = -1_000_000 - self._played  # below the announcements' negative ids
        output = self.transport.output
        step = int(sample_rate * _CHUNK_S) * 2
        for offset in range(0, len(pcm), step):
            await output.process(OutputAudio(pcm[offset:offset + step], sample_rate, turn_id, time.monotonic()))
        await output.process(AgentTurnDone(turn_id))
        with anyio.move_on_after(len(pcm) / (2 * sample_rate) + _PLAYED_TIMEOUT_S):
            await self.transport.drained()

    async def _hold(self) -> None:
        """The hold tune, paced a little ahead of playback, until cancelled."""
        rate = 8000
        tune = hold_tune(rate)
        step = int(rate * _CHUNK_S) * 2
        output = self.transport.output
        started = time.monotonic()
        sent_s = 0.0
        self._played += 1
        turn_id = -1_000_000 - self._played
        while True:
            for offset in range(0, len(tune), step):
                ahead = sent_s - (time.monotonic() - started)
                if ahead > _HOLD_AHEAD_S:
                    await anyio.sleep(ahead - _HOLD_AHEAD_S)
                with anyio.CancelScope(shield=True):  # a chunk goes out whole (the stop comes between two)
                    await output.process(OutputAudio(tune[offset:offset + step], rate, turn_id, time.monotonic()))
                sent_s += _CHUNK_S
