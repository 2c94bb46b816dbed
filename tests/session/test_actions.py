"""The agent acting on its own call: waiting until a line was heard, warm and cold transfers over Twilio's API."""

from __future__ import annotations

import time

import anyio
import pytest

from aybiza.errors import CallEnded, EndReason
from aybiza.pipeline import AgentTurnDone, CallContext, CallLedger, Interruption, OutputAudio
from aybiza.session.actions import HeardTap, SessionActions
from aybiza.testing.fake_twilio import FakeTwilio, twilio_sid
from aybiza.testing.kit import FrameRecorder, StubTransport
from aybiza.transports.twilio_rest import TwilioCallControl

pytestmark = pytest.mark.anyio

DESK = "+14155550100"


def _actions(twilio: FakeTwilio, call_sid: str) -> tuple[SessionActions, StubTransport]:
    control = TwilioCallControl(call_sid, account_sid=twilio.account_sid, auth_token=twilio.auth_token,
                                api_url=twilio.url)
    transport = StubTransport(control)
    return SessionActions(CallContext(call_id=call_sid, ledger=CallLedger()), transport), transport


async def test_a_warm_transfer_rings_and_briefs_the_colleague_then_bridges_the_caller() -> None:
    call = twilio_sid("CA")
    async with FakeTwilio(calls=[call], answer_after_s=1.0) as twilio:
        actions, transport = _actions(twilio, call)
        with pytest.raises(CallEnded) as ended:
            await actions.warm_transfer(DESK, "Ann Lee, a broken crown, in pain since this morning.", ring_s=20)
    assert ended.value.reason is EndReason.TRANSFERRED and actions.ending is not None
    [leg] = twilio.created
    room = f"aybiza-{call}"
    assert (leg.to, leg.from_, leg.ring_s) == (DESK, twilio.our_number, 20)
    assert "<Say>Ann Lee, a broken crown, in pain since this morning.</Say>" in leg.twiml
    assert 'startConferenceOnEnter="true"' in leg.twiml and room in leg.twiml
    steps = [(what, sid) for what, sid, _ in twilio.events]
    assert steps == [("create", leg.sid), ("answered", leg.sid), ("join", leg.sid), ("update", call), ("join", call)]
    assert twilio.conferences == {room: [leg.sid, call]}, "the colleague's leg first, then the caller"
    [update] = twilio.updates
    assert 'startConferenceOnEnter="false"' in update.twiml, "the caller waits on hold music until the brief ends"
    music = transport.recorder.of(OutputAudio)
    assert sum(frame.duration for frame in music) >= 0.8, "the caller heard the hold tune while it rang"
    assert transport.recorder.of(Interruption), "and it stopped when the colleague answered"


async def test_a_colleague_who_never_answers_leaves_the_caller_with_the_agent() -> None:
    call = twilio_sid("CA")
    async with FakeTwilio(calls=[call], answers={DESK: "ringing"}, answer_after_s=0.1) as twilio:
        actions, _ = _actions(twilio, call)
        started = time.monotonic()
        why = await actions.warm_transfer(DESK, "A caller for the front desk.", ring_s=0.5)
    assert why == f"{DESK} did not answer (ringing)" and actions.ending is None
    assert time.monotonic() - started < 6
    assert [what for what, _, _ in twilio.events] == ["create", "end"], "the unanswered leg was hung up"
    assert twilio.created[0].ended == "canceled" and twilio.updates == []


async def test_a_cold_transfer_dials_the_target_and_ends_the_call_transferred() -> None:
    call = twilio_sid("CA")
    async with FakeTwilio(calls=[call]) as twilio:
        actions, _ = _actions(twilio, call)
        assert actions.can_transfer
        with pytest.raises(CallEnded) as ended:
            await actions.transfer(DESK)
    assert ended.value.reason is EndReason.TRANSFERRED
    assert actions.ending == (EndReason.TRANSFERRED, f"transferred to {DESK}")
    assert f"<Dial><Number>{DESK}</Number></Dial>" in twilio.updates[0].twiml


async def test_a_line_counts_as_heard_once_its_utterances_reached_the_output_or_the_caller_barged_in() -> None:
    tap = HeardTap()
    recorder = FrameRecorder()
    tap.link(recorder)
    waited: list[str] = []

    async def wait(name: str, turn: int, barge_ins: int, utterances: int) -> None:
        await tap.reached(turn, barge_ins, utterances)
        waited.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, "two lines of turn 4", 4, 0, 2)
        await anyio.sleep(0.01)
        await tap.process(AgentTurnDone(4))
        await anyio.sleep(0.01)
        assert waited == []
        await tap.process(AgentTurnDone(4))
        await anyio.sleep(0.01)
        assert waited == ["two lines of turn 4"]
        tg.start_soon(wait, "turn 5, cut short", 5, 0, 1)
        await anyio.sleep(0.01)
        await tap.process(Interruption(at=time.monotonic()))  # the line was dropped: it will never arrive
        await anyio.sleep(0.01)
        assert waited[-1] == "turn 5, cut short"
        await tap.process(AgentTurnDone(5))  # the handoff said after that barge-in
        await wait("turn 5's handoff, after the barge-in", 5, 1, 1)
    assert waited[-1] == "turn 5's handoff, after the barge-in"
    assert [type(f).__name__ for f in recorder.frames] == ["AgentTurnDone", "AgentTurnDone", "Interruption",
                                                           "AgentTurnDone"]
