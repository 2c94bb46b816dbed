"""Turn-taking: finals after the caller stops make a turn; speech over the agent is a barge-in."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from aybiza.pipeline import (
    DTMF,
    CallContext,
    Frame,
    Interruption,
    Pipeline,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    UserTurn,
)
from aybiza.processors.turns import TurnTaker


class Sink(Processor):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process(self, frame: Frame) -> None:
        self.frames.append(frame)


async def _run(frames: list[Frame | float], ctx: CallContext | None = None, **options: Any) -> list[Frame]:
    sink = Sink()

    async def feed(pipe: Pipeline, tg: Any) -> None:
        for item in frames:
            if isinstance(item, float):
                await anyio.sleep(item)
            else:
                await pipe.push(item)
        await anyio.sleep(0.05)

    await Pipeline([TurnTaker(**options), sink]).run(ctx or CallContext(call_id="t"), feed)
    return sink.frames


def _turns(frames: list[Frame]) -> list[UserTurn]:
    return [f for f in frames if isinstance(f, UserTurn)]


@pytest.mark.anyio
async def test_a_final_after_the_caller_stops_ends_the_turn_at_once() -> None:
    frames = await _run([SpeechStarted(1.0), SpeechStopped(2.0), Transcript("what are your hours", final=True)])
    [turn] = _turns(frames)
    assert (turn.text, turn.turn_id, turn.speech_ended_at) == ("what are your hours", 1, 2.0)


@pytest.mark.anyio
async def test_finals_that_came_early_are_joined_after_a_grace_period() -> None:
    frames = await _run(
        [SpeechStarted(1.0), Transcript("where are", final=True), Transcript("you located", final=True),
         SpeechStopped(2.0), 0.1],
        final_grace_s=0.05,
    )
    assert [t.text for t in _turns(frames)] == ["where are you located"]


@pytest.mark.anyio
async def test_speech_resuming_within_the_grace_period_continues_the_turn() -> None:
    frames = await _run(
        [SpeechStarted(1.0), Transcript("I want to", final=True), SpeechStopped(2.0), 0.01,
         SpeechStarted(2.1), Transcript("cancel", final=True), SpeechStopped(3.0), 0.1],
        final_grace_s=0.05,
    )
    assert [t.text for t in _turns(frames)] == ["I want to cancel"]


@pytest.mark.anyio
async def test_interim_transcripts_and_empty_speech_make_no_turn() -> None:
    frames = await _run([SpeechStarted(1.0), Transcript("what", final=False), SpeechStopped(2.0), 0.1],
                        final_timeout_s=0.05)
    assert _turns(frames) == []
    assert any(isinstance(f, Transcript) for f in frames)  # interim passed on for display


@pytest.mark.anyio
async def test_speech_while_the_agent_speaks_interrupts_before_anything_else() -> None:
    ctx = CallContext(call_id="b")
    ctx.agent_speaking = True
    frames = await _run([SpeechStarted(5.0)], ctx)
    assert isinstance(frames[0], Interruption) and frames[0].at == 5.0
    assert isinstance(frames[1], SpeechStarted)
    assert ctx.usage["interruptions"] == 1


@pytest.mark.anyio
async def test_no_barge_in_when_the_agent_is_quiet_or_barge_in_is_off() -> None:
    quiet = await _run([SpeechStarted(5.0)])
    ctx = CallContext(call_id="off")
    ctx.agent_speaking = True
    off = await _run([SpeechStarted(5.0)], ctx, barge_in=False)
    assert not any(isinstance(f, Interruption) for f in quiet + off)


@pytest.mark.anyio
async def test_dtmf_is_recorded_on_the_call_and_passed_on() -> None:
    ctx = CallContext(call_id="d")
    frames = await _run([DTMF("4"), DTMF("2")], ctx)
    assert ctx.digits == "42"
    assert [f.digit for f in frames if isinstance(f, DTMF)] == ["4", "2"]
