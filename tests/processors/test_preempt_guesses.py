"""Preemptive replies, the guess's side effects: where its recognition timings are filed, what a failed guess
says (nothing until the turn is confirmed), and the answer cache's first turn after a discarded guess."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence

import anyio
import pytest
from anyio.abc import TaskGroup

from aybiza.agents import AgentConfig
from aybiza.edge.answers import ANSWER_NAMESPACE, AnswerPolicy, CachedAnswer
from aybiza.edge.cache import MemoryCache
from aybiza.errors import OverloadedError
from aybiza.pipeline import (
    AgentText,
    AgentTurnDone,
    CallContext,
    CallLedger,
    Notice,
    Pipeline,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Stage,
    Transcript,
    UserTurn,
)
from aybiza.processors.cache import CachedAnswers
from aybiza.processors.llm.reply import ReplyProcessor
from aybiza.processors.llm.sentences import ReplyEvent, ReplyRequest, ReplyUsage, TextDelta
from aybiza.processors.preempt import PreemptiveReplies
from aybiza.testing import wait_until
from aybiza.testing.kit import FrameRecorder

pytestmark = pytest.mark.anyio


class Model:
    """Answers "You asked: <words>." after ``delay_s``; fails the requests whose words are in ``fail_on``."""

    provider = "scripted"

    def __init__(self, delay_s: float = 0.05, fail_on: Sequence[str] = ()) -> None:
        self.delay_s = delay_s
        self.fail_on = set(fail_on)
        self.requests: list[str] = []

    def stream_reply(self, request: ReplyRequest) -> AsyncGenerator[ReplyEvent, None]:
        self.requests.append(request.messages[-1].text)
        return self._events(request.messages[-1].text)

    async def _events(self, text: str) -> AsyncGenerator[ReplyEvent, None]:
        await anyio.sleep(self.delay_s)
        if text in self.fail_on:
            raise OverloadedError("every region is overloaded")
        yield TextDelta(f"You asked: {text}.")
        yield ReplyUsage("scripted-model", 50, 5)

    async def aclose(self) -> None:
        return None


async def run(stage: Processor, ctx: CallContext, script: object) -> FrameRecorder:
    recorder = FrameRecorder()

    async def feed(pipe: Pipeline, tg: TaskGroup) -> None:
        with anyio.fail_after(10):
            await script(pipe, recorder)  # type: ignore[operator]

    await Pipeline([stage, recorder]).run(ctx, feed)
    return recorder


def said(recorder: FrameRecorder) -> list[str]:
    return [frame.text for frame in recorder.of(AgentText)]


async def test_a_final_after_the_guess_is_timed_under_the_guessed_turn() -> None:
    ctx = CallContext(call_id="CAledger", ledger=CallLedger())
    reply = ReplyProcessor(Model(), system_prompt="Help.")

    async def script(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        ctx.ledger.time(Stage.STT_FINAL, 0.15)  # the recogniser's first final, timed as it arrives
        await pipe.push(Transcript("what time", final=True))  # the guess at turn 1 starts
        ctx.ledger.time(Stage.STT_FINAL, 0.25)  # the caller went on: the next final, still turn 1's
        await pipe.push(Transcript("do you open", final=True))
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await pipe.push(UserTurn("what time do you open", turn_id=1))
        await wait_until(lambda: bool(recorder.of(AgentTurnDone)), limit_s=2.0)
        ctx.ledger.turn = 1  # the turn-taker's bookkeeping, as in the assembled stack
        ctx.ledger.time(Stage.STT_FINAL, 0.3)  # the caller's next turn
        await anyio.sleep(0.05)

    await run(PreemptiveReplies(reply, reply), ctx, script)
    turn_one = [seconds for stage, seconds, turn in ctx.ledger.samples if stage is Stage.STT_FINAL and turn == 1]
    turn_two = [seconds for stage, seconds, turn in ctx.ledger.samples if stage is Stage.STT_FINAL and turn == 2]
    assert turn_one == [0.15, 0.25]
    assert turn_two == [0.3]


async def test_a_failed_guess_apologises_only_once_the_turn_is_confirmed() -> None:
    ctx = CallContext(call_id="CAfail", ledger=CallLedger())
    notices: list[tuple[Notice, float]] = []

    async def announce(notice: Notice) -> None:
        notices.append((notice, time.monotonic()))

    ctx.announce = announce
    model = Model(delay_s=0.02, fail_on=["what time do you open"])
    reply = ReplyProcessor(model, system_prompt="Help.")
    confirmed_at: list[float] = []

    async def script(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await pipe.push(Transcript("what time do you open", final=True))
        await anyio.sleep(0.3)  # the guess failed long ago: nothing said, nothing counted yet
        assert notices == [] and ctx.ledger.model_errors == 0
        confirmed_at.append(time.monotonic())
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await pipe.push(UserTurn("what time do you open", turn_id=1))
        await wait_until(lambda: bool(notices), limit_s=2.0)
        await anyio.sleep(0.05)

    recorder = await run(PreemptiveReplies(reply, reply), ctx, script)
    assert [notice for notice, _ in notices] == [Notice.RETRY]  # the normal path's apology, once
    assert notices[0][1] >= confirmed_at[0]
    assert ctx.ledger.model_errors == 1
    assert said(recorder) == []


async def test_a_confirmed_turn_that_fails_apologises_at_once_while_the_next_turn_is_only_guessed() -> None:
    ctx = CallContext(call_id="CAfail3", ledger=CallLedger())
    notices: list[Notice] = []

    async def announce(notice: Notice) -> None:
        notices.append(notice)

    ctx.announce = announce
    model = Model(delay_s=0.2, fail_on=["what time do you open"])
    reply = ReplyProcessor(model, system_prompt="Help.")

    async def script(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await pipe.push(Transcript("what time do you open", final=True))
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await pipe.push(UserTurn("what time do you open", turn_id=1))  # confirmed; its model will fail
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await pipe.push(Transcript("and on sunday", final=True))  # a guess at turn 2, queued behind it
        await wait_until(lambda: bool(notices), limit_s=1.0)  # turn 1's apology does not wait for turn 2
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await pipe.push(UserTurn("and on sunday", turn_id=2))
        await wait_until(lambda: bool(said(recorder)), limit_s=2.0)
        await anyio.sleep(0.05)

    recorder = await run(PreemptiveReplies(reply, reply), ctx, script)
    assert notices == [Notice.RETRY]
    assert " ".join(said(recorder)).endswith("and on sunday.")  # turn 2 answered (after the failed question)


async def test_a_failed_guess_the_caller_went_on_from_is_never_heard() -> None:
    ctx = CallContext(call_id="CAfail2", ledger=CallLedger())
    notices: list[Notice] = []

    async def announce(notice: Notice) -> None:
        notices.append(notice)

    ctx.announce = announce
    model = Model(delay_s=0.02, fail_on=["what time"])
    reply = ReplyProcessor(model, system_prompt="Help.")

    async def script(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await pipe.push(Transcript("what time", final=True))
        await anyio.sleep(0.2)  # the guess failed; then the caller went on
        await pipe.push(Transcript("do you open", final=True))
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await pipe.push(UserTurn("what time do you open", turn_id=1))
        await wait_until(lambda: bool(recorder.of(AgentTurnDone)), limit_s=2.0)
        await anyio.sleep(0.05)

    recorder = await run(PreemptiveReplies(reply, reply), ctx, script)
    assert notices == [] and ctx.ledger.model_errors == 0
    assert said(recorder) == ["You asked: what time do you open."]
    assert ctx.ledger.usage().preemptions == {"discarded": 1, "used": 1}


async def test_a_discarded_first_guess_leaves_the_first_turn_cacheable() -> None:
    agent = AgentConfig(id="shop", name="Shop", greeting="Hi.", system_prompt="Help.", fallback="Sorry?")
    policy = AnswerPolicy(agent)
    cache = MemoryCache()
    key = policy.key_for("what time do you open", "en", first_turn=True)
    assert key is not None and policy.key_for("what time do you open", "en", first_turn=False) is None
    await cache.set(ANSWER_NAMESPACE, key, CachedAnswer(("We open at nine.",), "en").encode(), 60)
    ctx = CallContext(call_id="CAcache", ledger=CallLedger())
    model = Model(delay_s=0.3)
    reply = ReplyProcessor(model, system_prompt="Help.")

    async def script(pipe: Pipeline, recorder: FrameRecorder) -> None:
        await pipe.push(SpeechStarted(at=time.monotonic()))
        await pipe.push(Transcript("what time", final=True))  # a guess at the first turn: a cache miss
        await anyio.sleep(0.05)
        await pipe.push(Transcript("do you open", final=True))  # discarded; the whole first question
        await pipe.push(SpeechStopped(at=time.monotonic()))
        await pipe.push(UserTurn("what time do you open", turn_id=1))
        await wait_until(lambda: bool(recorder.of(AgentTurnDone)), limit_s=2.0)
        await anyio.sleep(0.05)

    recorder = await run(PreemptiveReplies(CachedAnswers(reply, cache, policy), reply), ctx, script)
    assert said(recorder) == ["We open at nine."]  # from the cache: the confirmed turn is still the first
    assert model.requests == ["what time"]
