"""The FAQ responder: the default "model" stage, with no keys and no network.

It is not a language model. It embeds the caller's turn with
all-MiniLM-L6-v2, finds the agent's FAQ whose phrasings are closest in
meaning (cosine similarity, best phrasing wins, nudged by a small
word-overlap boost) and speaks that FAQ's answer, sentence by sentence;
below the agent's ``match_threshold`` it speaks the agent's fallback.
Greetings and fillers that open a turn ("hi there", "um", "okay so") are
dropped before matching (:func:`normalize_turn`): a bare "hello?" gets the
fallback rather than the nearest FAQ.
Matching runs in a thread inside a Worker, so the event loop never waits
on it and barge-in cancels it.

Near the threshold the responder asks instead of guessing: a best score in
``[threshold - confirm_band, threshold)`` gets "Did you mean {topic}?" and
the caller's next turn decides (yes: the answer; no: the fallback; anything
else is a new question). On a bad line (the call's quality tier is
``low``) only a clear match is answered, and after a question "did you
mean ...?"; anything less gets the agent's reprompt (move somewhere
quieter, say it again) rather than a confident wrong answer. On a line so
bad that the recogniser invents words (quality score under 0.15), even a
clear match is only asked about, and nothing less. Every
hypothesis the recogniser gave (n-best, :attr:`UserTurn.alternatives`) is
matched and the best one counts. The caller's language picks the agent's
FAQ and texts in it (:meth:`AgentConfig.faqs_in`, :meth:`AgentConfig.text`);
a language the agent lacks gets its own language. Turns whose reply
depends on the conversation (a confirmation, its yes or no, a reprompt)
are listed in ``unsettled_turns`` so the answer cache does not keep them.

An FAQ may bind an ``action`` (``transfer``, ``warm_transfer``,
``end_call``): its answer is spoken, then the action runs through the call's
toolbox (:meth:`~aybiza.processors.llm.tooling.ToolRunner.act`), on the call
record like any tool call. A barge-in does not stop an action under way (it
finishes, as tools do). When the call cannot do it (a browser call has no
call control; the transfer failed), the caller hears the agent's
``cannot_transfer`` line instead and the call goes on.
"""

from __future__ import annotations

import inspect
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import numpy as np
import numpy.typing as npt
from anyio.abc import TaskGroup

from ...agents import FAQ, AgentConfig
from ...pipeline import (
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    Interruption,
    Processor,
    Stage,
    UserTurn,
    Worker,
)
from .tooling import ToolRunner, ToolTurn

__all__ = [
    "TextEncoder",
    "FAQMatch",
    "FAQMatcher",
    "FAQResponder",
    "MatcherFor",
    "normalize_turn",
    "split_sentences",
    "yes_or_no",
]

_YES = frozenset("yes yeah yep yup sure correct right exactly absolutely please sí si claro exacto eso oui ouais "
                 "exactement ja genau richtig".split())
_NO = frozenset("no nope nah not wrong non nein nicht".split())
_SURE_MARGIN = 0.2  # on a bad line, how far above the threshold a match must be to be answered outright
# A line scoring below this (SNR under ~3.5 dB) is one whose words the recogniser invents: whisper base heard
# 0 dB white noise under six questions as 30 sentences, none right, several in the "did you mean" band
# ("I'm not going to have to leave it" -> cancel an appointment, 0.53). There only a sure match is asked about.
_NO_GUESS_BELOW = 0.15


def yes_or_no(text: str) -> bool | None:
    """True for a yes ("yes please", "that's right", "sí"), False for a no, None for neither."""
    words = set(re.findall(r"[\w']+", text.lower()))
    if words & _NO:
        return False
    if words & _YES:
        return True
    return None


class TextEncoder(Protocol):
    """Anything that turns texts into unit-length vectors (e.g. :class:`SentenceEncoder`)."""

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One unit-length row per text."""
        ...


@dataclass(frozen=True, slots=True)
class FAQMatch:
    """The outcome of one turn: the FAQ answered (None = fallback) and its cosine score."""

    turn_id: int
    faq_id: str | None
    score: float


_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


def split_sentences(text: str) -> list[str]:
    """Split at ``.``, ``?`` or ``!`` followed by whitespace (so "3.5" or "a.b" stay whole)."""
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text.strip())) if s]


# What a caller says before the question, as whisper writes it: "Hi there, um, so what ...".
_FILLER = r"(?:um+|uh+|erm?|hmm+|ah|oh|so|well|okay|ok|yeah|yes|right|hi|hello|hey|good (?:morning|afternoon|evening))"
_LEADING_FILLERS = re.compile(rf"^(?:{_FILLER}(?: there)?\b[\s,.!?-]*)+", re.IGNORECASE)
_HESITATIONS = re.compile(r"\b(?:um+|uh+|erm?|hmm+)\b[,.]?\s*", re.IGNORECASE)


def normalize_turn(text: str) -> str:
    """``text`` without the greetings and fillers that open it and without hesitations ("um", "uh")."""
    text = _HESITATIONS.sub("", text.strip())
    return _LEADING_FILLERS.sub("", text).strip()


# Words that say nothing about which FAQ is meant (function words, fillers, polite padding).
_STOPWORDS = frozenset(
    """a about am an and any are as at be been but by can could did do does for from get got had has
    have hello hi how i i'd i'm if in is it it's just know like me my need of oh ok okay on or our
    please should so some than thank thanks that the their them then there this to uh um us want was
    we what when where which who why will with would yeah yes you you're your""".split()
)
_WORD = re.compile(r"[a-z0-9']+")


def _stems(text: str) -> set[str]:
    """Content words of ``text``, cut to 4 letters: a crude stem (book/booked, park/parking)."""
    return {w[:4] for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


class _LexicalIndex:
    """IDF-weighted share of the question's content words that occur in each FAQ's text."""

    def __init__(self, faqs: Sequence[FAQ]) -> None:
        self._vocab = [_stems(" ".join(faq.questions) + " " + faq.answer) for faq in faqs]
        count = len(faqs)
        df: dict[str, int] = {}
        for words in self._vocab:
            for w in words:
                df[w] = df.get(w, 0) + 1
        self._idf = {w: math.log((count + 1) / (n + 0.5)) for w, n in df.items()}
        self._unknown_idf = math.log((count + 1) / 0.5)  # a word no FAQ uses weighs most

    def overlap(self, text: str) -> npt.NDArray[np.float32]:
        """Per FAQ, in [0, 1]: weight of the question's words found in that FAQ / weight of all."""
        words = _stems(text)
        out = np.zeros(len(self._vocab), dtype=np.float32)
        total = sum(self._idf.get(w, self._unknown_idf) for w in words)
        if total <= 0.0:
            return out
        for i, vocab in enumerate(self._vocab):
            out[i] = sum(self._idf[w] for w in words if w in vocab) / total
        return out


class FAQMatcher:
    """Nearest FAQ by meaning: cosine to the closest phrasing, plus a small lexical boost.

    The boost (``lexical_weight`` times the IDF-weighted share of the question's
    content words found in the FAQ's phrasings and answer) breaks near-ties in
    favour of FAQs that use the caller's words, e.g. a card brand or insurer
    named only in the answer. On the project's paraphrase sets it turned 3 of
    about 100 questions from wrong or fallback into right (see benchmarks/faq_text.py).
    """

    def __init__(self, agent: AgentConfig, encoder: TextEncoder, lexical_weight: float = 0.2,
                 language: str | None = None,
                 encode_phrasings: Callable[[Sequence[str]], npt.NDArray[np.float32]] | None = None) -> None:
        """``encode_phrasings`` encodes the phrasings at load instead of ``encoder`` (a disk cache of its vectors)."""
        self.agent = agent
        self.lexical_weight = lexical_weight
        self._encoder = encoder
        faqs = agent.faqs_in(language) if language is not None else agent.faqs
        self._faqs: tuple[FAQ, ...] = faqs
        phrasings = [q for faq in faqs for q in faq.questions]
        self._owner = np.array([i for i, faq in enumerate(faqs) for _ in faq.questions], dtype=np.intp)
        # One batched forward pass for all phrasings, at load.
        self._phrasings = (encode_phrasings or encoder.encode)(phrasings) if phrasings \
            else np.zeros((0, 1), np.float32)
        self._lexical = _LexicalIndex(faqs)

    def scores(self, text: str) -> npt.NDArray[np.float32]:
        """Score per FAQ (in the agent's FAQ order) for ``text``: best cosine + lexical boost.

        ``text`` is matched as given; :meth:`match` normalises it first (:func:`normalize_turn`).
        """
        best = np.full(len(self._faqs), -1.0, dtype=np.float32)
        if not self._faqs or not text.strip():
            return best
        query = self._encoder.encode([text])[0]
        np.maximum.at(best, self._owner, self._phrasings @ query)
        if self.lexical_weight:
            best += np.float32(self.lexical_weight) * self._lexical.overlap(text)
        return best

    def match(self, text: str) -> tuple[FAQ | None, float]:
        """The closest FAQ and its score; ``(None, score)`` below the agent's threshold.

        Only greetings or fillers (nothing left after :func:`normalize_turn`) score 0.0.
        """
        faq, score = self.closest(text)
        if faq is None or score < self.agent.match_threshold:
            return None, score
        return faq, score

    def closest(self, text: str) -> tuple[FAQ | None, float]:
        """The closest FAQ whatever its score (None only for nothing to match)."""
        text = normalize_turn(text)
        if not self._faqs or not text:
            return None, 0.0
        best = self.scores(text)
        index = int(np.argmax(best))
        return self._faqs[index], float(best[index])

    def best_of(self, texts: Sequence[str]) -> tuple[FAQ | None, float]:
        """The closest FAQ over several hypotheses of one turn (n-best): the highest score wins."""
        found: tuple[FAQ | None, float] = (None, 0.0)
        for text in texts:
            faq, score = self.closest(text)
            if faq is not None and (found[0] is None or score > found[1]):
                found = (faq, score)
        return found


@dataclass(frozen=True, slots=True)
class _PendingTurn:
    turn: UserTurn
    arrived_at: float


MatcherFor = Callable[[str], FAQMatcher]
"""The agent's FAQ matcher for a primary language tag (the process's engines keep them)."""


class FAQResponder(Processor):
    """Answers each UserTurn from the agent's FAQ (or its fallback); an FAQ responder, not an LLM."""

    __slots__ = ("agent", "actions", "_matcher", "_build_matcher", "_matchers", "_worker", "_last_match",
                 "_pending", "_acting", "_barge_ins", "unsettled_turns")

    name = "faq"
    consumes = frozenset({UserTurn, Interruption})
    produces = frozenset({AgentText, AgentTurnDone})

    def __init__(self, agent: AgentConfig, matcher: FAQMatcher | Callable[[], FAQMatcher] | MatcherFor,
                 maxsize: int = 8, *, actions: ToolRunner | None = None) -> None:
        super().__init__()
        self.agent = agent
        self.actions = actions
        self._acting = False
        self._barge_ins = 0
        self._matcher: FAQMatcher | None = matcher if isinstance(matcher, FAQMatcher) else None
        self._build_matcher = matcher if not isinstance(matcher, FAQMatcher) else None
        self._matchers: dict[str, FAQMatcher] = {}
        self._worker: Worker[_PendingTurn] = Worker(self._answer, maxsize=maxsize)
        self._last_match: FAQMatch | None = None
        self._pending: FAQ | None = None  # asked "did you mean ...?" about it
        self.unsettled_turns: set[int] = set()
        """Turns whose reply depends on the conversation: not for the answer cache."""

    @property
    def last_match(self) -> FAQMatch | None:
        """The most recent turn's match (faq id, score), or None before the first answer."""
        return self._last_match

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Build (or reuse) the matcher off the event loop, then start the worker."""
        await super().start(ctx, tg)
        await self._matcher_for(self.agent.language)
        self._worker.start(tg, name=f"{self.name}-worker")

    async def _matcher_for(self, language: str) -> FAQMatcher:
        """The matcher of the agent's FAQ in ``language`` (built off the event loop the first time)."""
        if self._matcher is not None:
            return self._matcher
        primary = language.split("-", 1)[0].lower()
        matcher = self._matchers.get(primary)
        if matcher is None:
            build = self._build_matcher
            assert build is not None
            try:
                parameters = len(inspect.signature(build).parameters)
            except (TypeError, ValueError):
                parameters = 1
            call: Any = build  # one of the two factory shapes: by language, or the agent's language only
            made: Any = await anyio.to_thread.run_sync(call, primary) if parameters else \
                await anyio.to_thread.run_sync(call)
            matcher = made
            self._matchers[primary] = matcher
        return matcher

    async def stop(self) -> None:
        """Close the worker's queue."""
        await self._worker.close()
        if self.actions is not None:
            await self.actions.aclose()

    async def process(self, frame: Frame) -> None:
        """Queue caller turns; on barge-in drop the answer in progress; pass everything else on."""
        if isinstance(frame, UserTurn):
            if frame.text.strip():
                await self._worker.put(_PendingTurn(frame, time.monotonic()))
            return
        if isinstance(frame, Interruption):
            self._barge_ins += 1
            self._worker.flush(cancel_current=not self._acting)  # an action under way finishes
        await self.push(frame)

    async def _answer(self, pending: _PendingTurn) -> None:
        ctx = self.ctx
        assert ctx is not None, "FAQResponder used before start()"
        turn, agent = pending.turn, self.agent
        language = agent.reply_language(turn.language)
        matcher = await self._matcher_for(language)
        reply = await self._confirmed(turn, language)
        if reply is None:
            texts = [turn.text, *turn.alternatives]
            faq, score = await anyio.to_thread.run_sync(matcher.best_of, texts, abandon_on_cancel=True)
            reply = self._reply(turn, language, faq, score)
        sentences = split_sentences(reply)
        ctx.ledger.answered("faq")
        # The whole answer is ready at once: its "first token" is the first sentence.
        ctx.ledger.time(Stage.LLM_FIRST_TOKEN, time.monotonic() - pending.arrived_at)
        action = self._action(language)
        if action is not None:
            await self._act(action, reply, turn, language)
            return
        for sentence in sentences:
            await self.push(AgentText(sentence, turn.turn_id, language))
        await self.push(AgentTurnDone(turn.turn_id))

    def _action(self, language: str) -> str | None:
        """The action bound to the FAQ this turn answered, when the call can act."""
        match = self._last_match
        if self.actions is None or match is None or match.faq_id is None:
            return None
        faq = next((faq for faq in self.agent.faqs_in(language) if faq.id == match.faq_id), None)
        return faq.action if faq is not None else None

    async def _act(self, action: str, answer: str, turn: UserTurn, language: str) -> None:
        """Say ``answer``, then run ``action``; if it cannot run (or failed), say so instead."""
        assert self.actions is not None
        barge_ins = self._barge_ins
        said = 0  # utterances ended since the action began (a barge-in drops them all)

        async def say(text: str) -> None:
            nonlocal said
            await self.push(AgentText(text, turn.turn_id, language))
            await self.push(AgentTurnDone(turn.turn_id))
            said += 1

        async def finish() -> None:
            return None  # every line is a whole utterance already

        def progress() -> tuple[int, int]:
            return (self._barge_ins, said if self._barge_ins == barge_ins else 0)

        self._acting = True
        try:
            result = await self.actions.act(action, ToolTurn(turn.turn_id, language, say, finish,
                                                             spoken=lambda: said > 0, progress=progress),
                                            lines=[answer])
        finally:
            self._acting = False
        if result.error:  # still here: the call could not be handed over
            await say(self.agent.text("cannot_transfer" if action != "end_call" else "fallback", language))

    async def _confirmed(self, turn: UserTurn, language: str) -> str | None:
        """The reply to a yes or no after "did you mean ...?" (None: not an answer to it)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        decision = yes_or_no(turn.text)
        if decision is None:
            return None
        self.unsettled_turns.add(turn.turn_id)
        assert self.ctx is not None
        self.ctx.log.info("faq turn %d: %s to %s", turn.turn_id, "yes" if decision else "no", pending.id)
        self._last_match = FAQMatch(turn.turn_id, pending.id if decision else None, 1.0 if decision else 0.0)
        return pending.answer if decision else self.agent.text("fallback", language)

    def _reply(self, turn: UserTurn, language: str, faq: FAQ | None, score: float) -> str:
        """Answer, ask "did you mean ...?", reprompt (a bad line) or fall back."""
        ctx, agent = self.ctx, self.agent
        assert ctx is not None
        threshold, bad_line = agent.match_threshold, ctx.quality_tier == "low"
        answer_at, ask_at = threshold, threshold - agent.confirm_band  # scores answered, and asked about
        if bad_line and ctx.quality_score < _NO_GUESS_BELOW:
            answer_at, ask_at = math.inf, threshold + _SURE_MARGIN
        elif bad_line:
            answer_at, ask_at = threshold + _SURE_MARGIN, threshold
        if faq is not None and score >= answer_at:
            outcome, reply = faq.id, faq.answer
        elif faq is not None and score >= ask_at:
            self._pending = faq
            self.unsettled_turns.add(turn.turn_id)
            outcome = f"did you mean {faq.id}?"
            reply = agent.text("confirm_prompt", language).replace("{topic}", faq.subject)
        elif bad_line:
            # A bad line, not a bad question: ask the caller to move or repeat.
            self.unsettled_turns.add(turn.turn_id)
            outcome, reply = "reprompt (bad line)", agent.text("reprompt", language)
        else:
            outcome, reply = "fallback", agent.text("fallback", language)
        answered = faq.id if faq is not None and reply == faq.answer else None
        self._last_match = FAQMatch(turn.turn_id, answered, score)
        ctx.log.info("faq turn %d: %s (score %.3f)", turn.turn_id, outcome, score)
        return reply
