"""The built-ins: what the caller hears, what happens to the call, and what the record keeps."""

from __future__ import annotations

from typing import Any, NoReturn

import anyio
import pytest

from aybiza.agents import FAQ, AgentConfig
from aybiza.errors import CallEnded, EndReason, ProviderError
from aybiza.pipeline import CallContext, CallLedger
from aybiza.processors.llm.tooling import ToolCall, ToolTurn
from aybiza.tools.toolbox import Toolbox

pytestmark = pytest.mark.anyio

DESK = "+14155550100"


class Actions:
    """The session's side of the built-ins, recorded."""

    def __init__(self, *, can_transfer: bool = True, answers: bool = True) -> None:
        self.can_transfer = can_transfer
        self.answers = answers
        self.done: list[tuple[str, Any]] = []

    async def played(self, turn_id: int, barge_ins: int, utterances: int) -> None:
        self.done.append(("played", (turn_id, utterances)))

    async def transfer(self, target: str) -> NoReturn:
        self.done.append(("transfer", target))
        raise CallEnded(EndReason.TRANSFERRED, f"transferred to {target}")

    async def warm_transfer(self, target: str, brief: str, *, ring_s: float) -> str:
        self.done.append(("warm_transfer", (target, brief)))
        if self.answers:
            raise CallEnded(EndReason.TRANSFERRED, f"warm transfer to {target}")
        return f"{target} did not answer (no-answer)"

    async def end_call(self, detail: str) -> NoReturn:
        self.done.append(("end_call", detail))
        raise CallEnded(EndReason.AGENT_ENDED, detail)

    async def play(self, pcm: bytes, sample_rate: int) -> None:
        self.done.append(("play", len(pcm) / (2 * sample_rate)))


class Turn:
    """A turn the tools speak in: what was said and how many utterances ended."""

    def __init__(self, spoken: bool = False) -> None:
        self.lines: list[str] = []
        self.segments = 1 if spoken else 0

    def tool_turn(self) -> ToolTurn:
        async def say(text: str) -> None:
            self.lines.append(text)
            self.segments += 1

        async def finish() -> None:
            return None

        return ToolTurn(3, "en", say, finish, spoken=lambda: self.segments > 0, progress=lambda: (0, self.segments))


def agent(*tools: dict[str, Any], **changes: Any) -> AgentConfig:
    return AgentConfig.model_validate({"id": "desk", "name": "Desk", "greeting": "Hi.", "system_prompt": "Help.",
                                       "fallback": "Sorry?", "transfer_to": DESK, "tools": list(tools), **changes})


def toolbox(config: AgentConfig, actions: Actions | None = None, **kwargs: Any) -> tuple[Toolbox, CallContext]:
    ctx = CallContext(call_id="CAbox", ledger=CallLedger())
    return Toolbox(ctx, config, actions=actions if actions is not None else Actions(), **kwargs), ctx


async def test_digits_are_collected_masked_on_the_record_and_flagged_while_collecting() -> None:
    box, ctx = toolbox(agent({"builtin": "collect_digits", "max_digits": 8}))
    turn = Turn()
    flags: list[bool] = []

    async def caller() -> None:
        await anyio.sleep(0.05)
        flags.append(ctx.collecting_digits and box.wants_speech)
        for key in "1234#":
            box.key(key)

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        [result] = await box.run([ToolCall("t1", "collect_digits", {"prompt": "Type your account number."})],
                                 turn.tool_turn())
    assert result.content == {"digits": "1234", "complete": True}, "the model gets the digits"
    assert turn.lines == ["Type your account number."]
    assert flags == [True] and not ctx.collecting_digits, "the recording's pause signal, up only while collecting"
    [use] = ctx.ledger.tool_uses(3)
    assert use.result == {"digits": "••••", "complete": True}
    assert ctx.ledger.redact("Your account 1 2 3 4, or 1234.") == "Your account • • • •, or ••••."


async def test_no_keys_get_a_reprompt_then_an_error_and_words_end_it() -> None:
    box, _ = toolbox(agent({"builtin": "collect_digits", "timeout_s": 0.1, "attempts": 2},
                           digits_retry="Please use your keypad."))
    turn = Turn()
    [result] = await box.run([ToolCall("t1", "collect_digits", {})], turn.tool_turn())
    assert result.error and result.content["error"] == "the caller pressed no keys"
    assert turn.lines == ["Please use your keypad."]

    async def says_it() -> None:
        await anyio.sleep(0.05)
        box.hear("it's four three two one")

    async with anyio.create_task_group() as tg:
        tg.start_soon(says_it)
        [spoken] = await box.run([ToolCall("t2", "collect_digits", {})], Turn().tool_turn())
    assert spoken.content == {"digits": "", "caller_said_instead": "it's four three two one"}


async def test_a_transfer_says_the_handoff_waits_until_heard_then_hands_the_call_over() -> None:
    actions = Actions()
    box, ctx = toolbox(agent({"builtin": "transfer"}, handoff="Putting you through."), actions)
    turn = Turn()
    with pytest.raises(CallEnded) as ended:
        await box.run([ToolCall("t1", "transfer", {"reason": "asked for a person"})], turn.tool_turn())
    assert ended.value.reason is EndReason.TRANSFERRED
    assert turn.lines == ["Putting you through."]
    assert actions.done == [("played", (3, 1)), ("transfer", DESK)], "heard first, then transferred"
    assert ctx.ledger.tool_uses(3)[0].outcome == "ok"


async def test_a_call_that_cannot_transfer_is_not_offered_one_and_an_faq_action_says_nothing() -> None:
    box, _ = toolbox(agent({"builtin": "transfer"}, {"builtin": "end_call"}), Actions(can_transfer=False))
    assert [schema.name for schema in box.schemas] == ["end_call"]
    turn = Turn()
    result = await box.act("transfer", turn.tool_turn(), lines=["I'll put you through."])
    assert result.error and turn.lines == [], "no promise of a transfer that cannot happen"


async def test_a_warm_transfer_nobody_answers_is_an_error_the_model_reads() -> None:
    actions = Actions(answers=False)
    box, _ = toolbox(agent({"builtin": "warm_transfer"}, hold="Please hold."), actions)
    turn = Turn(spoken=True)
    [result] = await box.run([ToolCall("t1", "warm_transfer", {"summary": "Ann, broken crown, in pain."})],
                             turn.tool_turn())
    assert result.error and "did not answer" in result.content["error"]
    assert turn.lines == ["Please hold."]
    assert ("warm_transfer", (DESK, "Ann, broken crown, in pain.")) in actions.done


async def test_digits_are_sent_as_tones_and_the_agent_can_hang_up() -> None:
    actions = Actions()
    box, _ = toolbox(agent({"builtin": "send_digits"}, {"builtin": "end_call"}, goodbye="Bye now."), actions)
    turn = Turn()
    [sent] = await box.run([ToolCall("t1", "send_digits", {"digits": "2#"})], turn.tool_turn())
    assert sent.content == {"sent": "2#"} and ("play", pytest.approx(0.4)) in actions.done
    with pytest.raises(CallEnded) as ended:
        await box.run([ToolCall("t2", "end_call", {})], turn.tool_turn())
    assert ended.value.reason is EndReason.AGENT_ENDED and turn.lines == ["Bye now."]


class Matcher:
    def match(self, text: str) -> tuple[FAQ | None, float]:
        if "park" in text:
            return FAQ(id="parking", answer="Free parking behind the building.", questions=("parking?",)), 0.8
        return None, 0.1


async def test_the_faq_lookup_answers_from_the_agents_faq() -> None:
    config = agent({"builtin": "faq_lookup"}, faqs=[{"id": "parking", "answer": "Free.", "questions": ["park?"]}])
    box, _ = toolbox(config, faq=Matcher)
    found, missing = await box.run([ToolCall("t1", "faq_lookup", {"question": "where do I park"}),
                                    ToolCall("t2", "faq_lookup", {"question": "do you sell shoes"})],
                                   Turn().tool_turn())
    assert found.content == {"answer": "Free parking behind the building.", "topic": "parking", "score": 0.8}
    assert missing.content == {"answer": None, "score": 0.1}


async def test_a_failing_call_control_is_reported_to_the_model() -> None:
    class Broken(Actions):
        async def transfer(self, target: str) -> NoReturn:
            raise ProviderError("Twilio call update failed: HTTP 500", provider="twilio")

    box, ctx = toolbox(agent({"builtin": "transfer"}), Broken())
    [result] = await box.run([ToolCall("t1", "transfer", {})], Turn(spoken=True).tool_turn())
    assert result.error and "HTTP 500" in result.content["error"]
    assert ctx.ledger.tool_uses(3)[0].outcome == "error"
