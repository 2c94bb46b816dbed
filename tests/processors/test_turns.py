"""Turn-taking: finals after the caller stops make a turn; speech over the agent is a barge-in."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from aybiza.pipeline import (
    DTMF,
    AgentResume,
    AgentSpeaking,
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
from aybiza.processors.turns import TurnTaker, is_backchannel


class Sink(Processor):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process(self, frame: Frame) -> None:
        self.frames.append(frame)


async def _run(frames: list[Frame | float], ctx: CallContext | None = None, *, agent_speaking: bool = False,
               **options: Any) -> list[Frame]:
    """Run a TurnTaker over ``frames`` (floats are pauses); ``agent_speaking`` steers AgentSpeaking(True) first."""
    sink = Sink()
    turns = TurnTaker(**options)

    async def feed(pipe: Pipeline, tg: Any) -> None:
        if agent_speaking:
            await sink.steer(AgentSpeaking(True))  # what the output steers up when the caller hears the agent
        for item in frames:
            if isinstance(item, float):
                await anyio.sleep(item)
            else:
                await pipe.push(item)
        await anyio.sleep(0.05)

    await Pipeline([turns, sink]).run(ctx or CallContext(call_id="t"), feed)
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
    frames = await _run([SpeechStarted(5.0)], ctx, agent_speaking=True)
    assert isinstance(frames[0], Interruption) and frames[0].at == 5.0
    assert isinstance(frames[1], SpeechStarted)
    assert ctx.ledger.interruptions == 1
    assert ctx.ledger.usage().interruptions == 1


@pytest.mark.anyio
async def test_no_barge_in_when_the_agent_is_quiet_or_barge_in_is_off() -> None:
    quiet = await _run([SpeechStarted(5.0)])
    off = await _run([SpeechStarted(5.0)], agent_speaking=True, barge_in=False)
    assert not any(isinstance(f, Interruption) for f in quiet + off)


@pytest.mark.anyio
async def test_the_agent_falling_silent_ends_the_barge_in_window() -> None:
    sink = Sink()

    async def feed(pipe: Pipeline, tg: Any) -> None:
        await sink.steer(AgentSpeaking(True))
        await sink.steer(AgentSpeaking(False))
        await pipe.push(SpeechStarted(5.0))

    steered: list[Frame] = []

    async def on_control(frame: Frame) -> None:
        steered.append(frame)

    await Pipeline([TurnTaker(), sink], on_control=on_control).run(CallContext(call_id="quiet"), feed)
    assert not any(isinstance(f, Interruption) for f in sink.frames)
    assert steered == [AgentSpeaking(True), AgentSpeaking(False)], "AgentSpeaking goes on up to the VAD"


@pytest.mark.anyio
async def test_a_final_transcript_moves_the_ledger_to_the_new_turn() -> None:
    ctx = CallContext(call_id="ledger")
    await _run([SpeechStarted(1.0), SpeechStopped(2.0), Transcript("hello", final=True)], ctx)
    assert ctx.ledger.turn == 1
    assert ctx.user_turn_ended_at == 2.0


@pytest.mark.anyio
async def test_dtmf_is_recorded_on_the_call_and_passed_on() -> None:
    ctx = CallContext(call_id="d")
    frames = await _run([DTMF("4"), DTMF("2")], ctx)
    assert ctx.digits == "42"
    assert [f.digit for f in frames if isinstance(f, DTMF)] == ["4", "2"]


# -- false interruptions --------------------------------------------------------------------------


def _resumed(frames: list[Frame]) -> bool:
    return any(isinstance(f, AgentResume) for f in frames)


@pytest.mark.anyio
async def test_a_backchannel_over_the_agent_lets_it_go_on_and_makes_no_turn() -> None:
    frames = await _run([SpeechStarted(5.0), SpeechStopped(5.4), Transcript("Uh-huh.", final=True), 0.05],
                        agent_speaking=True)
    assert isinstance(frames[0], Interruption)
    assert _resumed(frames)
    assert _turns(frames) == []


@pytest.mark.anyio
async def test_a_cough_over_the_agent_no_words_lets_it_go_on_within_a_second() -> None:
    frames = await _run([SpeechStarted(5.0), SpeechStopped(5.3), 0.8], agent_speaking=True,
                        backchannel_wait_s=0.6)
    assert _resumed(frames) and _turns(frames) == []


@pytest.mark.anyio
async def test_short_words_over_the_agent_stop_it_again_and_are_the_callers_turn() -> None:
    frames = await _run([SpeechStarted(5.0), SpeechStopped(5.6), Transcript("stop", final=True), 0.05],
                        agent_speaking=True)
    kinds = [type(f) for f in frames if isinstance(f, Interruption | AgentResume | UserTurn)]
    assert kinds == [Interruption, AgentResume, Interruption, UserTurn]
    assert [t.text for t in _turns(frames)] == ["stop"]


@pytest.mark.anyio
async def test_long_speech_over_the_agent_is_a_real_barge_in_whatever_it_says() -> None:
    frames = await _run([SpeechStarted(5.0), SpeechStopped(7.0), Transcript("okay", final=True), 0.05],
                        agent_speaking=True)
    assert not _resumed(frames)
    assert [t.text for t in _turns(frames)] == ["okay"]


def test_backchannels_are_told_from_answers() -> None:
    assert is_backchannel("Mm-hmm.") and is_backchannel("okay, yeah") and is_backchannel("")
    assert not is_backchannel("no") and not is_backchannel("where are you located")
    assert is_backchannel("Uh-uh.") and is_backchannel("uh huh")  # how whisper spells an "uh-huh" on the line
    assert not is_backchannel("follow-up") and not is_backchannel("okay-ish")
