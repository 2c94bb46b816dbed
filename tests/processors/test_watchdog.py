"""The watchdog: a late reply gets a holding line; a silent caller gets reprompts, then a goodbye."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from aybiza.errors import CallEnded, EndReason
from aybiza.pipeline import AgentSpeaking, CallContext, Notice, Pipeline, SpeechStarted, UserTurn
from aybiza.processors.watchdog import TurnWatchdog
from aybiza.testing.kit import FrameRecorder, check_conformance


async def _call(script: Any, watchdog: TurnWatchdog, announced: list[Notice]) -> BaseException | None:
    recorder = FrameRecorder()
    ctx = CallContext(call_id="w")

    async def announce(notice: Notice) -> None:
        announced.append(notice)
        await recorder.steer(AgentSpeaking(True))  # the output plays the notice...
        await recorder.steer(AgentSpeaking(False))  # ...and it is heard

    ctx.announce = announce

    async def feed(pipe: Pipeline, tg: Any) -> None:
        await script(pipe, recorder)

    try:
        await Pipeline([watchdog, recorder]).run(ctx, feed)
    except BaseExceptionGroup as group:
        return group.exceptions[0]
    return None


@pytest.mark.anyio
async def test_a_late_reply_gets_the_holding_line() -> None:
    announced: list[Notice] = []

    async def script(pipe: Pipeline, output: FrameRecorder) -> None:
        await pipe.push(UserTurn("what are your hours", 1))
        await anyio.sleep(0.15)
        await output.steer(AgentSpeaking(True))  # the reply, at last

    await _call(script, TurnWatchdog(reply_timeout_s=0.1, silence_s=5), announced)
    assert announced == [Notice.HOLD]


@pytest.mark.anyio
async def test_a_reply_in_time_gets_no_holding_line() -> None:
    announced: list[Notice] = []

    async def script(pipe: Pipeline, output: FrameRecorder) -> None:
        await pipe.push(UserTurn("what are your hours", 1))
        await anyio.sleep(0.05)
        await output.steer(AgentSpeaking(True))
        await anyio.sleep(0.2)

    await _call(script, TurnWatchdog(reply_timeout_s=0.1, silence_s=5), announced)
    assert announced == []


@pytest.mark.anyio
async def test_no_reply_at_all_gets_the_holding_line_then_a_request_to_repeat() -> None:
    announced: list[Notice] = []

    async def script(pipe: Pipeline, output: FrameRecorder) -> None:
        await pipe.push(UserTurn("what are your hours", 1))
        await anyio.sleep(0.3)

    await _call(script, TurnWatchdog(reply_timeout_s=0.1, silence_s=5), announced)
    assert announced == [Notice.HOLD, Notice.RETRY]


@pytest.mark.anyio
async def test_a_silent_caller_is_reprompted_then_told_goodbye_and_the_call_ends_with_a_typed_reason() -> None:
    announced: list[Notice] = []

    async def script(pipe: Pipeline, output: FrameRecorder) -> None:
        await output.steer(AgentSpeaking(True))  # the greeting
        await output.steer(AgentSpeaking(False))
        await anyio.sleep(2)

    error = await _call(script, TurnWatchdog(silence_s=0.1, reprompts=2), announced)
    assert announced == [Notice.STILL_THERE, Notice.STILL_THERE, Notice.GOODBYE]
    assert isinstance(error, CallEnded) and error.reason is EndReason.CALLER_SILENT


@pytest.mark.anyio
async def test_the_caller_speaking_resets_the_silence() -> None:
    announced: list[Notice] = []

    async def script(pipe: Pipeline, output: FrameRecorder) -> None:
        await output.steer(AgentSpeaking(False))
        for _ in range(4):
            await anyio.sleep(0.06)
            await pipe.push(SpeechStarted(0.0))
            await output.steer(AgentSpeaking(False))

    await _call(script, TurnWatchdog(silence_s=0.1, reprompts=1), announced)
    assert announced == []


@pytest.mark.anyio
async def test_the_watchdog_keeps_the_processor_contract() -> None:
    await check_conformance(TurnWatchdog)
