"""The greeting of an outbound call waits for the AMD verdict; a machine gets the voicemail message, then the end."""

from __future__ import annotations

import time
from typing import Any, cast

import anyio
import pytest

from aybiza.agents import AgentConfig, AgentTranslation
from aybiza.errors import CallEnded, EndReason
from aybiza.outbound.gate import AnsweringMachineGate
from aybiza.outbound.registry import OutboundCall, OutboundCalls
from aybiza.pipeline import AgentText, AgentTurnDone, CallContext, CallLedger, Frame, Interruption, UserTurn
from aybiza.session.actions import HeardTap, SessionActions
from aybiza.testing.kit import FrameRecorder, check_conformance, run_stage

AGENT = AgentConfig(id="sales", name="Sales", greeting="Hello from Sales.", system_prompt="-",
                    fallback="Pardon?", voicemail="Please call Sales back.", languages=("en", "es"),
                    translations={"es": AgentTranslation(voicemail="Llame a Ventas.")})
GREETING: list[Frame] = [AgentText("Hello from Sales.", turn_id=0), AgentTurnDone(0)]


class _Actions:
    """What the gate uses of the session's actions: the tap's barge-ins, waiting until heard, the ending."""

    def __init__(self, while_playing: list[Frame] | None = None) -> None:
        self.tap = HeardTap()
        self.ending: tuple[EndReason, str] | None = None
        self.waited: list[tuple[int, int]] = []
        self.while_playing = while_playing or []
        self.gate: AnsweringMachineGate | None = None

    async def played(self, turn_id: int, barge_ins: int, utterances: int) -> None:
        self.waited.append((turn_id, barge_ins))
        assert self.gate is not None
        for frame in self.while_playing:  # what reaches the gate from upstream while the message plays
            await self.gate.process(frame)


def _gate(call: OutboundCall, actions: _Actions, wait_s: float = 30.0) -> AnsweringMachineGate:
    actions.gate = AnsweringMachineGate(call, AGENT, cast(SessionActions, actions), wait_s=wait_s)
    return actions.gate


def _call() -> OutboundCall:
    return OutboundCalls().dialled("CA" + "1" * 32, "sales", "+14155550100", ring_s=30)


def _leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


async def _run(gate: AnsweringMachineGate, frames: list[Frame], recorder: FrameRecorder, *, verdict: str,
               call: OutboundCall, after_s: float, language: str = "en") -> BaseException | None:
    """Push ``frames``; post ``verdict`` after ``after_s``; the exception the call ended with (None: it went on)."""
    ctx = CallContext(call_id=call.call_sid, ledger=CallLedger(), language=language)

    async def post_later() -> None:
        await anyio.sleep(after_s)
        call.answer(verdict)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(post_later)
            await run_stage(gate, frames, recorder=recorder, ctx=ctx, settle_s=after_s + 0.3)
    except BaseExceptionGroup as group:
        return _leaf(group)
    return None


@pytest.mark.anyio
async def test_a_person_hears_the_greeting_once_the_verdict_came_and_their_hello_is_not_a_question() -> None:
    call, actions, recorder = _call(), _Actions(), FrameRecorder()
    started = time.monotonic()
    hello = UserTurn("hello", turn_id=1, speech_ended_at=started)
    ended = await _run(_gate(call, actions), [*GREETING, hello], recorder, verdict="human", call=call, after_s=0.3)
    assert ended is None
    assert [f for f in recorder.frames if isinstance(f, AgentText | AgentTurnDone | UserTurn)] == GREETING
    assert recorder.times[0] - started >= 0.25, "the greeting waited for the verdict"


@pytest.mark.anyio
async def test_a_machine_gets_the_voicemail_message_in_the_calls_language_and_the_call_ends() -> None:
    call, actions, recorder = _call(), _Actions(), FrameRecorder()
    machine_words = UserTurn("please leave a message", turn_id=1, speech_ended_at=time.monotonic())
    ended = await _run(_gate(call, actions), [*GREETING, machine_words], recorder, verdict="machine_end_beep",
                       call=call, after_s=0.2, language="es")
    assert isinstance(ended, CallEnded) and ended.reason is EndReason.VOICEMAIL
    assert actions.ending == (EndReason.VOICEMAIL, "voicemail left (answered by machine_end_beep)")
    assert [f.text for f in recorder.of(AgentText)] == ["Llame a Ventas."], "no greeting, no answer to the machine"
    assert actions.waited == [(0, 0)], "the call ended once the message was heard"
    assert not recorder.of(UserTurn)


@pytest.mark.anyio
async def test_no_verdict_in_time_greets_and_a_late_machine_verdict_cuts_in_with_the_message() -> None:
    call, actions, recorder = _call(), _Actions(), FrameRecorder()
    ended = await _run(_gate(call, actions, wait_s=0.1), GREETING, recorder, verdict="machine_end_silence", call=call,
                       after_s=0.4)
    assert isinstance(ended, CallEnded) and ended.reason is EndReason.VOICEMAIL
    texts = [f.text for f in recorder.of(AgentText)]
    assert texts == ["Hello from Sales.", "Please call Sales back."]
    kinds = [type(f) for f in recorder.frames]
    assert kinds.index(Interruption) > kinds.index(AgentTurnDone), "the greeting was cut off before the message"
    assert actions.waited == [(0, 1)], "the message is waited for past the barge-in that cut the greeting"


@pytest.mark.anyio
async def test_noise_on_a_machines_line_does_not_cut_the_message() -> None:
    noise = [Interruption(at=time.monotonic()), UserTurn("beep", turn_id=2, speech_ended_at=time.monotonic())]
    call, actions, recorder = _call(), _Actions(while_playing=noise), FrameRecorder()
    ended = await _run(_gate(call, actions), GREETING, recorder, verdict="machine_end_other", call=call, after_s=0.1)
    assert isinstance(ended, CallEnded) and ended.reason is EndReason.VOICEMAIL
    assert not recorder.of(Interruption) and not recorder.of(UserTurn)


@pytest.mark.anyio
async def test_a_fax_is_hung_up_on_at_once() -> None:
    call, actions, recorder = _call(), _Actions(), FrameRecorder()
    ended = await _run(_gate(call, actions), GREETING, recorder, verdict="fax", call=call, after_s=0.1)
    assert isinstance(ended, CallEnded) and ended.reason is EndReason.FAX
    assert not recorder.of(AgentText)


@pytest.mark.anyio
async def test_the_gate_keeps_the_processor_contract() -> None:
    def make() -> Any:
        return _gate(_call(), _Actions())

    await check_conformance(make)
