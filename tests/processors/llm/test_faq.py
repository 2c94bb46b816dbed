"""The FAQ responder answers paraphrases of the agent's FAQ and falls back on anything else."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import anyio
import numpy as np
import numpy.typing as npt
import pytest

from aybiza.agents import AgentConfig, load_agent
from aybiza.config import Settings
from aybiza.engines import Engines
from aybiza.errors import CallEnded, EndReason
from aybiza.pipeline import (
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    Interruption,
    Processor,
    QualityReport,
    Stage,
    UserTurn,
)
from aybiza.processors.llm.embedding import SentenceEncoder
from aybiza.processors.llm.faq import (
    FAQMatcher,
    FAQResponder,
    normalize_turn,
    split_sentences,
    yes_or_no,
)
from aybiza.testing import wait_until
from aybiza.tools.toolbox import Toolbox

AGENTS_DIR = Path(__file__).resolve().parents[3] / "agents"

# Ways a caller might ask that are not in agents/default.yaml, some with the
# kind of errors speech recognition makes (kept apart from the yaml's phrasings:
# a paraphrase that the yaml gained is replaced here by a new one).
PARAPHRASES = [
    ("what are you opening hours", "opening_hours"),
    ("what time do you guys start in the morning", "opening_hours"),
    ("do you work sundays", "opening_hours"),
    ("wear are you located", "location"),
    ("can you give me directions to the practice", "location"),
    ("is there somewhere to leave my car", "parking"),
    ("do i have to pay for parking", "parking"),
    ("are cleanings pricey", "prices"),
    ("what would a filling cost me", "prices"),
    ("i want to make an appointment for next tuesday", "book_appointment"),
    ("could i get booked in to see the dentist", "book_appointment"),
    ("i have to cancel my appointment on friday", "cancel_appointment"),
    ("can i move my appointment to another day", "cancel_appointment"),
    ("do you take visa", "payment_methods"),
    ("can i pay in installments", "payment_methods"),
    ("do you take aetna insurance", "insurance"),
    ("is my insurance accepted", "insurance"),
    ("my tooth is killing me and my jaw is swollen", "emergency"),
    ("half my tooth just snapped off", "emergency"),
    ("i'd like to drop you an email", "contact"),
    ("what number can i call you on", "contact"),
    ("is your practice taking on anyone new", "new_patients"),
    ("are kids welcome at your practice", "children"),
    ("my daughter is three can she come in", "children"),
    ("could i talk to a person instead", "speak_to_person"),
    ("i need to speak with someone real", "speak_to_person"),
]

OFF_TOPIC = ["purple elephant banana", "who won the football last night", "tell me a joke", "i like turtles"]


@pytest.fixture(scope="module")
def agent() -> AgentConfig:
    return load_agent("default", AGENTS_DIR)


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder.packaged()


@pytest.fixture(scope="module")
def matcher(agent: AgentConfig, encoder: SentenceEncoder) -> FAQMatcher:
    return FAQMatcher(agent, encoder)


def test_paraphrases_not_in_the_yaml_find_the_right_faq(matcher: FAQMatcher) -> None:
    wrong = []
    for question, expected in PARAPHRASES:
        faq, score = matcher.match(question)
        if faq is None or faq.id != expected:
            wrong.append((question, expected, faq.id if faq else None, round(score, 3)))
    assert len(wrong) <= len(PARAPHRASES) // 10, wrong  # at least 90 % right


def test_yaml_phrasings_match_their_own_faq(agent: AgentConfig, matcher: FAQMatcher) -> None:
    for faq in agent.faqs:
        for question in faq.questions:
            got, score = matcher.match(question)
            assert got is not None and got.id == faq.id, (question, got, score)


@pytest.mark.parametrize("question", OFF_TOPIC)
def test_nonsense_falls_back(matcher: FAQMatcher, question: str) -> None:
    faq, score = matcher.match(question)
    assert faq is None, (question, faq, score)


def test_blank_text_never_matches(matcher: FAQMatcher) -> None:
    assert matcher.match("   ") == (None, 0.0)


@pytest.mark.parametrize("turn", ["Hello?", "Hi there.", "Um, okay.", "Yeah, so..."])
def test_a_greeting_or_filler_alone_gets_the_fallback(matcher: FAQMatcher, turn: str) -> None:
    assert matcher.match(turn) == (None, 0.0)


def test_greetings_and_fillers_before_the_question_do_not_change_the_answer(matcher: FAQMatcher) -> None:
    for turn in ("Hi there, um, so do you have parking?", "Good morning. Uh, do you have parking?"):
        faq, _ = matcher.match(turn)
        assert faq is not None and faq.id == "parking", turn


def test_normalize_turn_drops_only_the_opening_fillers_and_hesitations() -> None:
    assert normalize_turn("Hello there, um, what are your hours?") == "what are your hours?"
    assert normalize_turn("So, uh, I need to cancel.") == "I need to cancel."
    # Words that carry the question stay, even when they could be fillers elsewhere.
    assert normalize_turn("Is it okay to pay cash?") == "Is it okay to pay cash?"
    assert normalize_turn("Sorry, wrong number.") == "Sorry, wrong number."


def test_raising_the_threshold_turns_weak_matches_into_fallbacks(agent: AgentConfig, encoder: SentenceEncoder) -> None:
    strict = FAQMatcher(agent.model_copy(update={"match_threshold": 0.99}), encoder)
    assert strict.match("wear are you located")[0] is None


def test_split_sentences_keeps_decimals_and_drops_blanks() -> None:
    assert split_sentences("We're open at 8.30 on Monday.  Closed Sunday! Any questions? ") == [
        "We're open at 8.30 on Monday.",
        "Closed Sunday!",
        "Any questions?",
    ]
    assert split_sentences("  ") == []


# --- the processor, end to end in a task group -------------------------------------------------


class Recorder(Processor):
    """The last stage: keeps every frame and signals each AgentTurnDone."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.turn_done = anyio.Event()

    async def process(self, frame: Frame) -> None:
        self.frames.append(frame)
        if isinstance(frame, AgentTurnDone):
            self.turn_done.set()


def _wire(responder: FAQResponder) -> Recorder:
    recorder = Recorder()
    responder.link(recorder)
    return recorder


@pytest.mark.anyio
async def test_user_turn_becomes_sentences_then_turn_done(agent: AgentConfig, matcher: FAQMatcher) -> None:
    responder = FAQResponder(agent, matcher)
    recorder = _wire(responder)
    ctx = CallContext(call_id="test-call")
    async with anyio.create_task_group() as tg:
        await responder.start(ctx, tg)
        await responder.process(UserTurn("hi, what are your opening hours?", turn_id=3))
        with anyio.fail_after(30):
            await recorder.turn_done.wait()
        await responder.stop()

    *texts, done = recorder.frames
    assert done == AgentTurnDone(3)
    assert all(isinstance(f, AgentText) and f.turn_id == 3 and f.language == "en" for f in texts)
    spoken = " ".join(f.text for f in texts if isinstance(f, AgentText))
    hours = next(faq for faq in agent.faqs if faq.id == "opening_hours")
    assert spoken == " ".join(split_sentences(hours.answer))
    assert len(texts) == len(split_sentences(hours.answer)) > 1
    assert "open" in spoken and "Monday" in spoken
    assert ctx.ledger.usage().answers == {"faq": 1}
    assert [stage for stage, _, _ in ctx.ledger.samples] == [Stage.LLM_FIRST_TOKEN]
    assert responder.last_match is not None
    assert responder.last_match.faq_id == "opening_hours" and responder.last_match.turn_id == 3


@pytest.mark.anyio
async def test_a_matcher_factory_is_called_when_the_call_starts(agent: AgentConfig, matcher: FAQMatcher) -> None:
    built: list[FAQMatcher] = []

    def factory() -> FAQMatcher:
        built.append(matcher)
        return matcher

    responder = FAQResponder(agent, factory)
    assert built == [], "nothing is loaded while the stack is assembled"
    recorder = _wire(responder)
    async with anyio.create_task_group() as tg:
        await responder.start(CallContext(call_id="c"), tg)
        await responder.process(UserTurn("do you have parking", turn_id=7))
        with anyio.fail_after(30):
            await recorder.turn_done.wait()
        await responder.stop()
    assert len(built) == 1
    assert responder.last_match is not None and responder.last_match.faq_id == "parking"


def test_the_process_keeps_one_matcher_per_agent_configuration_on_one_encoder(agent: AgentConfig) -> None:
    engines = Engines(Settings())
    same = engines.faq_matcher(load_agent("default", AGENTS_DIR))
    assert engines.faq_matcher(agent) is same
    edited = engines.faq_matcher(agent.model_copy(update={"match_threshold": 0.99}))
    assert edited is not same, "an edited agent gets a matcher of its own"
    assert edited._encoder is same._encoder, "the sentence encoder is loaded once per process"


@pytest.mark.anyio
async def test_unmatched_turn_speaks_the_fallback(agent: AgentConfig, matcher: FAQMatcher) -> None:
    responder = FAQResponder(agent, matcher)
    recorder = _wire(responder)
    async with anyio.create_task_group() as tg:
        await responder.start(CallContext(call_id="c"), tg)
        await responder.process(UserTurn("purple elephant banana", turn_id=1))
        with anyio.fail_after(30):
            await recorder.turn_done.wait()
        await responder.stop()
    spoken = " ".join(f.text for f in recorder.frames if isinstance(f, AgentText))
    assert spoken == " ".join(split_sentences(agent.fallback))
    assert responder.last_match is not None and responder.last_match.faq_id is None


@pytest.mark.anyio
async def test_blank_turns_are_ignored_and_other_frames_pass_straight_through(
    agent: AgentConfig, matcher: FAQMatcher
) -> None:
    responder = FAQResponder(agent, matcher)
    recorder = _wire(responder)
    ctx = CallContext(call_id="c")
    report = QualityReport(score=0.9, tier="high")
    async with anyio.create_task_group() as tg:
        await responder.start(ctx, tg)
        await responder.process(UserTurn("   ", turn_id=1))
        await responder.process(report)
        # Passed on within the same call, before any worker had a chance to run.
        assert recorder.frames == [report]
        await responder.stop()
    assert recorder.frames == [report]
    assert ctx.ledger.usage().answers == {}


class _BlockingEncoder:
    """Encodes FAQ phrasings at once but blocks on queries until released (a slow model)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.query_started = threading.Event()

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if len(texts) == 1 and texts[0].startswith("slow"):
            self.query_started.set()
            self.release.wait(30)
        vectors = np.zeros((len(texts), 4), dtype=np.float32)
        vectors[:, 0] = 1.0
        return vectors


@pytest.mark.anyio
async def test_barge_in_drops_the_answer_in_progress(agent: AgentConfig) -> None:
    encoder = _BlockingEncoder()
    responder = FAQResponder(agent, FAQMatcher(agent, encoder))
    recorder = _wire(responder)
    interruption = Interruption(at=1.0)
    try:
        async with anyio.create_task_group() as tg:
            await responder.start(CallContext(call_id="c"), tg)
            await responder.process(UserTurn("slow question", turn_id=1))
            assert await anyio.to_thread.run_sync(encoder.query_started.wait, 10)
            await responder.process(interruption)
            encoder.release.set()
            # The next turn is answered normally.
            await responder.process(UserTurn("when are you open", turn_id=2))
            with anyio.fail_after(30):
                await recorder.turn_done.wait()
            await responder.stop()
    finally:
        encoder.release.set()
    assert recorder.frames[0] == interruption
    assert all(getattr(f, "turn_id", 2) == 2 for f in recorder.frames[1:])
    assert recorder.frames[-1] == AgentTurnDone(2)


class _DeskActions:
    """The session's side of the FAQ's transfer: heard at once, then handed over (or not possible)."""

    def __init__(self, can_transfer: bool) -> None:
        self.can_transfer = can_transfer
        self.transferred: list[str] = []

    async def played(self, turn_id: int, barge_ins: int, utterances: int) -> None:
        return None

    async def transfer(self, target: str) -> NoReturn:
        self.transferred.append(target)
        raise CallEnded(EndReason.TRANSFERRED, f"transferred to {target}")


async def _ask(agent: AgentConfig, matcher: FAQMatcher, actions: _DeskActions, question: str
               ) -> tuple[Recorder, CallContext, BaseException | None]:
    ctx = CallContext(call_id="test-call")
    responder = FAQResponder(agent, matcher, actions=Toolbox(ctx, agent, actions=actions))  # type: ignore[arg-type]
    recorder = _wire(responder)
    ended: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            await responder.start(ctx, tg)
            await responder.process(UserTurn(question, turn_id=2))
            # A transfer ends the call (and this wait) with CallEnded; otherwise the turn ends.
            await wait_until(lambda: any(isinstance(f, AgentTurnDone) for f in recorder.frames)
                             and not actions.can_transfer, 30)
            await responder.stop()
    except BaseExceptionGroup as group:
        ended = group.exceptions[0]
    return recorder, ctx, ended


@pytest.mark.anyio
async def test_asking_for_a_person_is_answered_then_transferred_to_the_agents_number(
    agent: AgentConfig, matcher: FAQMatcher
) -> None:
    actions = _DeskActions(can_transfer=True)
    recorder, ctx, ended = await _ask(agent, matcher, actions, "Can I speak to a real person please?")
    assert isinstance(ended, CallEnded) and ended.reason is EndReason.TRANSFERRED
    assert actions.transferred == [agent.transfer_to] == ["+16035550142"]
    assert [f.text for f in recorder.frames if isinstance(f, AgentText)] == [
        "Of course. I'll put you through to the front desk now."]
    [use] = ctx.ledger.tool_uses(2)
    assert (use.name, use.kind, use.outcome) == ("transfer", "action", "ok")


@pytest.mark.anyio
async def test_where_no_transfer_is_possible_the_caller_is_told_how_to_reach_a_person(
    agent: AgentConfig, matcher: FAQMatcher
) -> None:
    recorder, _, ended = await _ask(agent, matcher, _DeskActions(can_transfer=False), "Can I speak to a real person?")
    assert ended is None
    spoken = [f.text for f in recorder.frames if isinstance(f, AgentText)]
    assert spoken == [agent.cannot_transfer] and "555 0142" in spoken[0], "no promise of a transfer first"
# -- near the threshold: "did you mean ...?" -----------------------------------------------------


class _ScriptedMatcher:
    """Scores every turn as told: (faq id, score) per turn text."""

    def __init__(self, agent: AgentConfig, scores: dict[str, tuple[str, float]]) -> None:
        self.faqs = {faq.id: faq for faq in agent.faqs}
        self.scores = scores

    def best_of(self, texts: Sequence[str]) -> tuple[Any, float]:
        faq_id, score = max((self.scores.get(t, ("opening_hours", 0.0)) for t in texts), key=lambda x: x[1])
        return self.faqs[faq_id], score


async def _conversation(agent: AgentConfig, matcher: Any, turns: Sequence[str | UserTurn],
                        tier: str = "high", score: float = 1.0) -> tuple[list[str], FAQResponder]:
    responder = FAQResponder(agent, lambda: matcher)
    replies: list[str] = []
    ctx = CallContext(call_id="confirm", quality_tier=tier, quality_score=score)
    async with anyio.create_task_group() as tg:
        await responder.start(ctx, tg)
        for number, turn in enumerate(turns, 1):
            recorder = _wire(responder)
            await responder.process(turn if isinstance(turn, UserTurn) else UserTurn(turn, turn_id=number))
            with anyio.fail_after(30):
                await recorder.turn_done.wait()
            replies.append(" ".join(f.text for f in recorder.frames if isinstance(f, AgentText)))
        await responder.stop()
    return replies, responder


@pytest.mark.anyio
async def test_a_question_just_under_the_threshold_is_confirmed_and_yes_gets_the_answer(agent: AgentConfig) -> None:
    near = agent.match_threshold - agent.confirm_band / 2
    matcher = _ScriptedMatcher(agent, {"when you guys around": ("opening_hours", near)})
    replies, responder = await _conversation(agent, matcher, ["when you guys around", "yes please"])
    hours = next(faq for faq in agent.faqs if faq.id == "opening_hours")
    assert replies == [f"Did you mean {hours.subject}?", " ".join(split_sentences(hours.answer))]
    assert responder.unsettled_turns == {1, 2}, "neither reply may be served from the answer cache"


@pytest.mark.anyio
async def test_no_to_did_you_mean_gets_the_fallback_and_a_new_question_is_just_answered(agent: AgentConfig) -> None:
    near = agent.match_threshold - 0.01
    matcher = _ScriptedMatcher(agent, {"hmm hours": ("opening_hours", near), "is there parking": ("parking", 0.9)})
    replies, _ = await _conversation(agent, matcher, ["hmm hours", "no", "hmm hours", "is there parking"])
    parking = next(faq for faq in agent.faqs if faq.id == "parking")
    assert replies[1] == " ".join(split_sentences(agent.fallback))
    assert replies[3] == " ".join(split_sentences(parking.answer))


@pytest.mark.anyio
async def test_on_a_bad_line_only_clear_matches_are_answered_and_the_rest_reprompted(agent: AgentConfig) -> None:
    threshold = agent.match_threshold
    matcher = _ScriptedMatcher(agent, {"clear": ("parking", threshold + 0.3), "fair": ("location", threshold + 0.05),
                                       "garbled": ("payment_methods", threshold - 0.02)})
    replies, _ = await _conversation(agent, matcher, ["clear", "fair", "garbled"], tier="low", score=0.3)
    location = next(faq for faq in agent.faqs if faq.id == "location")
    assert replies[0].startswith("Yes, we have free parking")
    assert replies[1] == f"Did you mean {location.subject}?"
    assert replies[2] == " ".join(split_sentences(agent.reprompt))


@pytest.mark.anyio
async def test_on_a_line_whose_words_are_invented_a_clear_match_is_asked_about_and_the_rest_reprompted(
    agent: AgentConfig
) -> None:
    threshold = agent.match_threshold
    matcher = _ScriptedMatcher(agent, {"clear": ("parking", threshold + 0.3), "fair": ("location", threshold + 0.15)})
    replies, _ = await _conversation(agent, matcher, ["clear", "fair"], tier="low", score=0.09)  # 0 dB white noise
    parking = next(faq for faq in agent.faqs if faq.id == "parking")
    assert replies[0] == f"Did you mean {parking.subject}?"
    assert replies[1] == " ".join(split_sentences(agent.reprompt))


def test_every_hypothesis_of_the_recogniser_is_tried(matcher: FAQMatcher) -> None:
    faq, _ = matcher.best_of(["purple elephant banana", "where can i park my car"])
    assert faq is not None and faq.id == "parking"


def test_yes_and_no_in_the_languages_the_agents_speak() -> None:
    assert yes_or_no("Yes, please.") and yes_or_no("sí, claro") and yes_or_no("oui") and yes_or_no("that's right")
    assert yes_or_no("No, that's not it") is False and yes_or_no("non") is False
    assert yes_or_no("what time do you close") is None
