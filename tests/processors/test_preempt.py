"""Preemptive replies: the model starts on a final transcript before the turn is confirmed; the caller going
on discards it (one answer, to the whole question), a confirmation lets it out at once, and tools wait."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup

from aybiza.agents import AgentConfig
from aybiza.pipeline import (
    AgentText,
    AgentTurnDone,
    CallContext,
    CallLedger,
    Interruption,
    Pipeline,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    UserTurn,
)
from aybiza.processors.llm.reply import ReplyProcessor
from aybiza.processors.llm.sentences import ReplyEvent, ReplyRequest, ReplyUsage, TextDelta
from aybiza.processors.llm.tooling import ToolCall
from aybiza.processors.preempt import PreemptiveReplies, same_words
from aybiza.testing import wait_until
from aybiza.testing.kit import FrameRecorder
from aybiza.testing.tool_server import ToolAnswer, ToolServer
from aybiza.tools.toolbox import Toolbox

pytestmark = pytest.mark.anyio


class Model:
    """A chat model answering the last user message after ``delay_s``; records what it was asked."""

    provider = "scripted"

    def __init__(self, answer: Callable[[ReplyRequest], Sequence[ReplyEvent]], delay_s: float = 0.2) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.requests: list[ReplyRequest] = []

    def stream_reply(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        self.requests.append(request)
        return self._events(request)

    async def _events(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        await anyio.sleep(self.delay_s)
        for event in self.answer(request):
            yield event

    async def aclose(self) -> None:
        return None


def echo(request: ReplyRequest) -> list[ReplyEvent]:
    """Answers "You asked: <the caller's words>."."""
    return [TextDelta(f"You asked: {request.messages[-1].text}."), ReplyUsage("scripted-model", 50, 5)]


Script = Callable[[Pipeline, FrameRecorder, PreemptiveReplies], Any]


async def run(model: Model, script: Script, tools: Callable[[CallContext], Toolbox] | None = None
              ) -> tuple[FrameRecorder, CallContext, ReplyProcessor]:
    ctx = CallContext(call_id="CApre", ledger=CallLedger())
    reply = ReplyProcessor(model, system_prompt="Help.", tools=tools(ctx) if tools is not None else None)
    stage = PreemptiveReplies(reply, reply)
    recorder = FrameRecorder()

    async def feed(pipe: Pipeline, tg: TaskGroup) -> None:
        with anyio.fail_after(10):
            await script(pipe, recorder, stage)

    await Pipeline([stage, recorder]).run(ctx, feed)
    return recorder, ctx, reply


def said(recorder: FrameRecorder) -> list[str]:
    return [frame.text for frame in recorder.of(AgentText)]


def test_same_words_ignores_case_and_punctuation() -> None:
    assert same_words("What time do you open?", "what time do you open")
    assert not same_words("what time", "what time do you open")


async def test_confirmed_turn_plays_the_held_reply_at_once_and_is_not_answered_twice() -> None:
    model = Model(echo, delay_s=0.2)
    released: list[float] = []

    async def script(pipe: Pipeline, recorder: FrameRecorder, stage: PreemptiveReplies) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await pipe.push(Transcript("what time do you open", final=True))  # the recogniser's own final
        await anyio.sleep(0.35)  # the model answered meanwhile: held, nothing heard yet
        assert said(recorder) == []
        await pipe.push(SpeechStopped(at=time.monotonic()))  # the end of turn is confirmed
        await wait_until(lambda: bool(said(recorder)), limit_s=1.0)
        released.append(time.monotonic())
        await pipe.push(UserTurn("what time do you open", turn_id=1))  # the turn-taker's turn: same words
        await wait_until(lambda: bool(recorder.of(AgentTurnDone)), limit_s=1.0)
        await anyio.sleep(0.3)

    started = time.monotonic()
    recorder, ctx, reply = await run(model, script)
    assert said(recorder) == ["You asked: what time do you open."]
    assert len(model.requests) == 1  # the confirmed turn was not asked again
    assert released[0] - started < 0.5  # out at once on confirmation, not 0.2 s of model time later
    assert ctx.ledger.usage().preemptions == {"used": 1}
    assert [m.role for m in reply.history] == ["user", "assistant"]


async def test_caller_going_on_discards_the_guess_and_answers_the_whole_question_once() -> None:
    model = Model(echo, delay_s=0.3)

    async def script(pipe: Pipeline, recorder: FrameRecorder, stage: PreemptiveReplies) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await pipe.push(Transcript("what time", final=True))
        await anyio.sleep(0.1)  # the caller paused, then went on before the model answered
        await pipe.push(Transcript("do you open tomorrow", final=True))
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await pipe.push(UserTurn("what time do you open tomorrow", turn_id=1))
        await wait_until(lambda: bool(recorder.of(AgentTurnDone)), limit_s=2.0)
        await anyio.sleep(0.2)

    recorder, ctx, reply = await run(model, script)
    assert said(recorder) == ["You asked: what time do you open tomorrow."]
    assert not recorder.of(Interruption)  # nothing was heard, so nothing is interrupted downstream
    assert ctx.ledger.usage().preemptions == {"discarded": 1, "used": 1}
    # the history holds the whole question once, and not the discarded guess
    assert [(m.role, m.text) for m in reply.history][0] == ("user", "what time do you open tomorrow")
    assert len(reply.history) == 2
    # the discarded guess was cut short before the provider reported usage: its input is estimated
    tokens = ctx.ledger.usage().tokens
    assert tokens["scripted"].input > 0 and tokens["scripted-model"].input == 50


async def test_a_late_final_with_other_words_discards_the_guess() -> None:
    model = Model(echo, delay_s=0.05)

    async def script(pipe: Pipeline, recorder: FrameRecorder, stage: PreemptiveReplies) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await pipe.push(Transcript("book a table", final=True))
        await anyio.sleep(0.2)
        await pipe.push(UserTurn("book a table for two", turn_id=1))  # the turn-taker saw one more final
        await wait_until(lambda: bool(recorder.of(AgentTurnDone)), limit_s=2.0)
        await anyio.sleep(0.2)

    recorder, ctx, _ = await run(model, script)
    assert said(recorder) == ["You asked: book a table for two."]
    assert ctx.ledger.usage().preemptions["discarded"] == 1


async def test_backchannels_and_speech_after_the_stop_start_nothing() -> None:
    model = Model(echo, delay_s=0.05)

    async def script(pipe: Pipeline, recorder: FrameRecorder, stage: PreemptiveReplies) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await pipe.push(Transcript("uh-huh", final=True))
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await pipe.push(Transcript("hello there", final=True))  # after the confirmed stop: the normal path
        await anyio.sleep(0.2)

    recorder, ctx, _ = await run(model, script)
    assert model.requests == [] and said(recorder) == []
    assert ctx.ledger.usage().preemptions == {}


@pytest.fixture
def shop() -> Iterator[ToolServer]:
    with ToolServer({"/orders/4321": ToolAnswer({"status": "shipped"})}) as server:
        yield server


def order_model(request: ReplyRequest) -> list[ReplyEvent]:
    last = request.messages[-1]
    if not last.tool_results:
        return [ToolCall("tooluse_1", "order_status", {"order_id": "4321"})]
    return [TextDelta(f"Your order is {last.tool_results[0].content['status']}.")]


def shop_agent(url: str) -> AgentConfig:
    tool = {"name": "order_status", "description": "Where an order is.", "url": url + "/orders/{order_id}",
            "method": "GET", "keep": ["status"], "timeout_s": 2.0,
            "parameters": {"type": "object", "required": ["order_id"],
                           "properties": {"order_id": {"type": "string", "pattern": "^[0-9]+$"}}}}
    return AgentConfig.model_validate({"id": "shop", "name": "Shop", "greeting": "Hi.", "system_prompt": "Help.",
                                       "fallback": "Sorry?", "tools": [tool]})


async def test_a_tool_waits_for_the_confirmed_turn(shop: ToolServer) -> None:
    model = Model(order_model, delay_s=0.05)

    async def script(pipe: Pipeline, recorder: FrameRecorder, stage: PreemptiveReplies) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await pipe.push(Transcript("where is my order", final=True))
        await anyio.sleep(0.5)  # the model asked for the tool long ago; it must not have run
        assert shop.requests == []
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await pipe.push(UserTurn("where is my order", turn_id=1))
        await wait_until(lambda: bool(recorder.of(AgentTurnDone)), limit_s=3.0)
        await anyio.sleep(0.1)

    recorder, ctx, _ = await run(model, script, tools=lambda ctx: Toolbox(ctx, shop_agent(shop.url)))
    assert said(recorder) == ["Your order is shipped."]
    assert len(shop.requests) == 1


async def test_a_discarded_guess_never_runs_its_tool(shop: ToolServer) -> None:
    model = Model(order_model, delay_s=0.05)

    async def script(pipe: Pipeline, recorder: FrameRecorder, stage: PreemptiveReplies) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await pipe.push(Transcript("where is my order", final=True))
        await anyio.sleep(0.3)
        await pipe.push(Interruption(at=time.monotonic()))  # the caller spoke over: everything stops
        await anyio.sleep(0.3)

    await run(model, script, tools=lambda ctx: Toolbox(ctx, shop_agent(shop.url)))
    assert shop.requests == []
