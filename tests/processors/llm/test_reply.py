"""The model stage's tool rounds: a tool's result reaches the answer, a slow tool gets a filler, a failing one
is explained, and a barge-in during a tool never loses its result nor leaves the agent silent."""

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
    UserTurn,
)
from aybiza.processors.llm.reply import ReplyProcessor
from aybiza.processors.llm.sentences import ReplyEvent, ReplyRequest, TextDelta
from aybiza.processors.llm.tooling import ToolCall, ToolResult
from aybiza.testing import wait_until
from aybiza.testing.kit import FrameRecorder
from aybiza.testing.tool_server import ToolAnswer, ToolServer
from aybiza.tools.toolbox import Toolbox

pytestmark = pytest.mark.anyio

Answer = Callable[[ReplyRequest], Sequence[ReplyEvent]]


class Model:
    """A chat model whose reply is built from what it is asked (and which records every request)."""

    provider = "scripted"

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[ReplyRequest] = []

    def stream_reply(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        self.requests.append(request)
        return self._events(request)

    async def _events(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        for event in self.answer(request):
            yield event

    async def aclose(self) -> None:
        return None


def results(request: ReplyRequest) -> list[ToolResult]:
    """The tool results the request's last message carries."""
    return list(request.messages[-1].tool_results)


def order_model(request: ReplyRequest) -> list[ReplyEvent]:
    """Looks the order up; then says what the tool said (or that it could not)."""
    if not results(request):
        return [TextDelta("Let me check. "), ToolCall("tooluse_1", "order_status", {"order_id": "4321"})]
    result = results(request)[0]
    if result.error:
        return [TextDelta("Sorry, I could not look that up right now.")]
    return [TextDelta(f"Your order is {result.content['status']}.")]


def agent(url: str, **changes: Any) -> AgentConfig:
    tool = {"name": "order_status", "description": "Where an order is.", "url": url + "/orders/{order_id}",
            "method": "GET", "keep": ["status"], "timeout_s": 2.0,
            "parameters": {"type": "object", "required": ["order_id"],
                           "properties": {"order_id": {"type": "string", "pattern": "^[0-9]+$"}}}}
    return AgentConfig.model_validate({"id": "shop", "name": "Shop", "greeting": "Hi.", "system_prompt": "Help.",
                                       "fallback": "Sorry?", "tools": [tool], **changes})


@pytest.fixture
def shop() -> Iterator[ToolServer]:
    with ToolServer({"/orders/4321": ToolAnswer({"status": "shipped", "warehouse": "internal detail"})}) as server:
        yield server


def said(recorder: FrameRecorder) -> list[str]:
    return [frame.text for frame in recorder.of(AgentText)]


async def converse(model: Model, tools_agent: AgentConfig, script: Callable[[Pipeline, FrameRecorder], Any],
                   *, resume_after_s: float = 2.0) -> tuple[FrameRecorder, CallContext]:
    ctx = CallContext(call_id="CAtools", ledger=CallLedger())
    toolbox = Toolbox(ctx, tools_agent, filler_after_s=0.5)
    stage = ReplyProcessor(model, system_prompt="Help.", tools=toolbox, resume_after_s=resume_after_s)
    recorder = FrameRecorder()

    async def feed(pipe: Pipeline, tg: TaskGroup) -> None:
        with anyio.fail_after(15):
            await script(pipe, recorder)

    await Pipeline([stage, recorder]).run(ctx, feed)
    return recorder, ctx


async def test_the_tool_is_called_with_the_models_arguments_and_the_answer_uses_its_result(shop: ToolServer) -> None:
    model = Model(order_model)

    async def script(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(UserTurn("Where is my order 4321?", 1))
        await wait_until(lambda: "Your order is shipped." in said(recorder), 10)

    recorder, ctx = await converse(model, agent(shop.url), script)
    [request] = shop.requests
    assert (request.method, request.path) == ("GET", "/orders/4321")
    assert said(recorder) == ["Let me check.", "Your order is shipped."]
    first, second = model.requests
    assert [tool.name for tool in first.tools] == ["order_status"]
    assert results(second)[0].content == {"status": "shipped"}, "only the kept fields reach the model"
    [use] = ctx.ledger.tool_uses(1)
    assert (use.name, use.kind, use.outcome, use.arguments) == ("order_status", "http", "ok", {"order_id": "4321"})
    assert use.duration_ms is not None and ctx.ledger.usage().tools == {"order_status": 1}


async def test_a_slow_tool_gets_one_short_filler(shop: ToolServer) -> None:
    shop.script["/orders/4321"] = ToolAnswer({"status": "shipped"}, delay_s=1.2)

    async def script(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(UserTurn("Where is my order 4321?", 1))
        await wait_until(lambda: "Your order is shipped." in said(recorder), 10)

    recorder, _ = await converse(Model(order_model), agent(shop.url, filler="One moment, please."), script)
    assert said(recorder) == ["Let me check.", "One moment, please.", "Your order is shipped."]
    done = [i for i, f in enumerate(recorder.frames) if isinstance(f, AgentTurnDone)]
    text = [i for i, f in enumerate(recorder.frames) if isinstance(f, AgentText)]
    assert done[0] < text[1] < done[1], "each line before the tool is flushed to the voice at once"


async def test_a_failing_tool_is_an_error_the_model_explains_not_a_crash(shop: ToolServer) -> None:
    shop.script["/orders/4321"] = ToolAnswer({"error": "database down"}, status=500)

    async def script(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(UserTurn("Where is my order 4321?", 1))
        await wait_until(lambda: len(said(recorder)) == 2, 10)

    model = Model(order_model)
    recorder, ctx = await converse(model, agent(shop.url), script)
    assert said(recorder)[-1] == "Sorry, I could not look that up right now."
    [result] = results(model.requests[1])
    assert result.error and "HTTP 500" in result.content["error"]
    assert ctx.ledger.tool_uses(1)[0].outcome == "error" and not ctx.ledger.incidents


async def test_arguments_outside_the_schema_never_reach_the_service(shop: ToolServer) -> None:
    def model_answer(request: ReplyRequest) -> list[ReplyEvent]:
        if not results(request):
            return [ToolCall("t1", "order_status", {"order_id": "../admin"}), ToolCall("t2", "refund", {})]
        return [TextDelta("Which order number was it?")]

    async def script(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(UserTurn("Where is my order?", 1))
        await wait_until(lambda: bool(said(recorder)), 10)

    model = Model(model_answer)
    await converse(model, agent(shop.url), script)
    assert shop.requests == []
    bad_argument, unknown = results(model.requests[1])
    assert bad_argument.error and "order_id must match" in bad_argument.content["error"]
    assert unknown.error and "no tool called 'refund'" in unknown.content["error"]


async def test_a_barge_in_during_a_tool_keeps_its_result_for_the_callers_next_turn(shop: ToolServer) -> None:
    shop.script["/orders/4321"] = ToolAnswer({"status": "shipped"}, delay_s=0.8)

    def model_answer(request: ReplyRequest) -> list[ReplyEvent]:
        last = request.messages[-1]
        if "also" in last.text:
            return [TextDelta(f"It is {last.tool_results[0].content['status']}, and yes, we deliver on Sundays.")]
        return order_model(request)

    async def script(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(UserTurn("Where is my order 4321?", 1))
        await wait_until(lambda: bool(shop.requests))
        await pipe.push(Interruption(at=time.monotonic()))  # the caller talks over "Let me check."
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await anyio.sleep(0.2)
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await pipe.push(UserTurn("and also, do you deliver on Sundays?", 2))
        await wait_until(lambda: any("Sundays" in text for text in said(recorder)), 10)
        await anyio.sleep(0.3)

    model = Model(model_answer)
    recorder, ctx = await converse(model, agent(shop.url), script)
    assert len(shop.requests) == 1, "the tool ran once, to the end"
    assert len(model.requests) == 2, "the interrupted turn was not continued over the caller"
    history = model.requests[1].messages
    assert history[-2].tool_calls[0].name == "order_status"
    assert history[-1].tool_results[0].content == {"status": "shipped"}
    assert history[-1].text == "and also, do you deliver on Sundays?"
    assert said(recorder)[-1] == "It is shipped, and yes, we deliver on Sundays."
    assert ctx.ledger.tool_uses(1)[0].outcome == "ok"


async def test_a_barge_in_without_words_during_a_tool_still_gets_the_answer(shop: ToolServer) -> None:
    shop.script["/orders/4321"] = ToolAnswer({"status": "shipped"}, delay_s=0.5)

    async def script(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(UserTurn("Where is my order 4321?", 1))
        await wait_until(lambda: bool(shop.requests))
        await pipe.push(Interruption(at=time.monotonic()))  # a cough: speech, but no words
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await wait_until(lambda: "Your order is shipped." in said(recorder), 10)

    started = time.monotonic()
    recorder, _ = await converse(Model(order_model), agent(shop.url), script, resume_after_s=0.4)
    assert said(recorder)[-1] == "Your order is shipped.", "the agent is never left silent"
    assert time.monotonic() - started >= 0.4
    assert recorder.of(AgentTurnDone)[-1].turn_id == 1
