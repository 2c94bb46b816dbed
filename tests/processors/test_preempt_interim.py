"""Preemptive replies on a stable interim: the model starts once an interim's words and the caller (by the VAD)
have been still for a while; the final keeps the guess when it says the same, else discards it; tools wait."""

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
    Pipeline,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    UserTurn,
)
from aybiza.processors.llm.reply import ReplyProcessor
from aybiza.processors.llm.sentences import ReplyEvent, ReplyRequest, ReplyUsage, TextDelta
from aybiza.processors.llm.tooling import ToolCall
from aybiza.processors.preempt import PreemptiveReplies
from aybiza.testing import wait_until
from aybiza.testing.kit import FrameRecorder
from aybiza.testing.tool_server import ToolAnswer, ToolServer
from aybiza.tools.toolbox import Toolbox

pytestmark = pytest.mark.anyio

STABLE_S = 0.08


class Model:
    """A chat model answering after ``delay_s``; records the words it was asked about, and when."""

    provider = "scripted"

    def __init__(self, answer: Callable[[ReplyRequest], Sequence[ReplyEvent]], delay_s: float = 0.1) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.asked: list[tuple[str, float]] = []

    def stream_reply(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        self.asked.append((request.messages[-1].text, time.monotonic()))
        return self._events(request)

    async def _events(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        await anyio.sleep(self.delay_s)
        for event in self.answer(request):
            yield event

    async def aclose(self) -> None:
        return None


def echo(request: ReplyRequest) -> list[ReplyEvent]:
    return [TextDelta(f"You asked: {request.messages[-1].text}."), ReplyUsage("scripted-model", 50, 5)]


class Quiet:
    """The VAD's view: how long the caller has been quiet (set by the script)."""

    def __init__(self) -> None:
        self.since: float | None = None  # None: speaking

    def speaking(self) -> None:
        self.since = None

    def paused(self) -> None:
        self.since = time.monotonic()

    def __call__(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since


Script = Callable[[Pipeline, FrameRecorder, Quiet], Any]


async def run(model: Model, script: Script, tools: Callable[[CallContext], Toolbox] | None = None
              ) -> tuple[FrameRecorder, CallContext]:
    ctx = CallContext(call_id="CAinterim", ledger=CallLedger())
    reply = ReplyProcessor(model, system_prompt="Help.", tools=tools(ctx) if tools is not None else None)
    quiet = Quiet()
    stage = PreemptiveReplies(reply, reply, interim_stable_s=STABLE_S, caller_quiet_s=quiet)
    recorder = FrameRecorder()

    async def feed(pipe: Pipeline, tg: TaskGroup) -> None:
        with anyio.fail_after(10):
            await script(pipe, recorder, quiet)

    await Pipeline([stage, recorder]).run(ctx, feed)
    return recorder, ctx


def said(recorder: FrameRecorder) -> list[str]:
    return [frame.text for frame in recorder.of(AgentText)]


async def test_a_stable_interim_in_a_pause_starts_the_model_before_the_final() -> None:
    model = Model(echo)
    final_at: list[float] = []

    async def script(pipe: Pipeline, recorder: FrameRecorder, quiet: Quiet) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await pipe.push(Transcript("what time", final=False))
        await anyio.sleep(STABLE_S * 2)  # stable words, but the caller is still speaking: no guess
        assert model.asked == []
        await pipe.push(Transcript("what time do you open", final=False))
        quiet.paused()
        await anyio.sleep(STABLE_S * 2)  # stable and quiet: the guess starts
        final_at.append(time.monotonic())
        await pipe.push(Transcript("What time do you open?", final=True))  # the same words: kept
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await pipe.push(UserTurn("What time do you open?", turn_id=1))
        await wait_until(lambda: bool(recorder.of(AgentTurnDone)), limit_s=2.0)
        await anyio.sleep(0.05)

    recorder, ctx = await run(model, script)
    assert [text for text, _ in model.asked] == ["what time do you open"]  # asked once, on the interim
    assert model.asked[0][1] < final_at[0]
    assert said(recorder) == ["You asked: what time do you open."]
    assert ctx.ledger.usage().preemptions == {"used": 1}


async def test_a_final_with_other_words_discards_the_interim_guess_and_restarts() -> None:
    model = Model(echo, delay_s=0.3)

    async def script(pipe: Pipeline, recorder: FrameRecorder, quiet: Quiet) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        quiet.paused()
        await pipe.push(Transcript("what time do you opine", final=False))
        await wait_until(lambda: bool(model.asked), limit_s=1.0)  # the guess started on the interim
        await pipe.push(Transcript("what time do you open", final=True))  # the final heard it otherwise
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await pipe.push(UserTurn("what time do you open", turn_id=1))
        await wait_until(lambda: bool(recorder.of(AgentTurnDone)), limit_s=2.0)
        await anyio.sleep(0.05)

    recorder, ctx = await run(model, script)
    assert [text for text, _ in model.asked] == ["what time do you opine", "what time do you open"]
    assert said(recorder) == ["You asked: what time do you open."]  # only the final's answer is heard
    usage = ctx.ledger.usage()
    assert usage.preemptions == {"discarded": 1, "used": 1}
    assert usage.tokens["scripted"].input > 0  # the discarded guess's tokens, estimated, on the ledger


async def test_an_interim_that_keeps_changing_starts_nothing() -> None:
    model = Model(echo)

    async def script(pipe: Pipeline, recorder: FrameRecorder, quiet: Quiet) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        quiet.paused()
        for words in ("what", "what time", "what time do", "what time do you"):
            await pipe.push(Transcript(words, final=False))
            await anyio.sleep(STABLE_S / 3)
        await pipe.push(Transcript("what time do you open", final=True))  # the final's own guess
        await anyio.sleep(0.3)

    await run(model, script)
    assert [text for text, _ in model.asked] == ["what time do you open"]


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


async def test_an_interim_guess_that_wants_a_tool_waits_for_the_confirmed_turn(shop: ToolServer) -> None:
    model = Model(order_model, delay_s=0.02)

    async def script(pipe: Pipeline, recorder: FrameRecorder, quiet: Quiet) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        quiet.paused()
        await pipe.push(Transcript("where is my order", final=False))
        await wait_until(lambda: bool(model.asked), limit_s=1.0)
        await pipe.push(Transcript("where is my order", final=True))
        await anyio.sleep(0.4)  # the model asked for the tool long ago: it must not have run
        assert shop.requests == []
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await pipe.push(UserTurn("where is my order", turn_id=1))
        await wait_until(lambda: bool(recorder.of(AgentTurnDone)), limit_s=3.0)
        await anyio.sleep(0.05)

    recorder, _ = await run(model, script, tools=lambda ctx: Toolbox(ctx, shop_agent(shop.url)))
    assert said(recorder) == ["Your order is shipped."]
    assert len(shop.requests) == 1
    assert len([text for text, _ in model.asked if text == "where is my order"]) == 1  # the guess, not re-asked
