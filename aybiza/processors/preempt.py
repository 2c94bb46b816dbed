"""Preemptive replies: start the model on the caller's words before the end of turn is confirmed.

A turn's latency is otherwise a chain of waits: the end-of-turn silence, the
final transcript, the model's first token, the voice's first audio. The
recogniser often sends its final transcript *before* our end of turn is
confirmed (Deepgram's own endpointing finalises a phrase as soon as the
caller pauses, while the VAD and the end-of-turn model are still waiting),
so the model can start then and its reply be ready when the turn ends.

:class:`PreemptiveReplies` wraps the answers stage (the answer cache around
the model) and sees every frame on its way to it:

* a final transcript while the caller's turn is still open (no confirmed
  ``SpeechStopped`` yet) starts a *tentative* reply on the words so far
  (a backchannel alone does not). What the model (or the answer cache, which
  answers at once) says is **held**: nothing reaches the voice;
* the caller goes on (another final before the turn ends): the tentative
  reply is **discarded** (cancelled, its history undone) and a new one starts
  on the longer text, so the caller gets one answer, to the whole question;
* the turn is confirmed (the end-of-turn ``SpeechStopped``, or the
  turn-taker's ``UserTurn`` with the same words): what was held goes out at
  once and the rest streams on; the ``UserTurn`` itself is not answered again;
* a ``UserTurn`` whose words differ (a late final) discards the tentative
  reply (interrupting it if it was already heard) and is answered normally;
* tools never run on a guess: a tentative reply that wants a tool waits, at
  the model's ``turn_gate``, for the confirmed turn (discarded: it never runs);
* nor is an error heard on a guess: a tentative reply whose model failed (every
  region, after the router's failover) waits at the same gate, and once the
  turn is confirmed the model's normal path apologises (or ends the call);
* a barge-in discards a tentative reply with everything else.

**On a stable interim.** The recogniser's final comes some time after the
speech ends (its own endpointing). Its interim hypotheses come sooner, but may
still change, so one starts a guess only when it is *stable*: its words
unchanged for ``interim_stable_s`` and the caller silent that long by the VAD
(``caller_quiet_s``, the VAD's :attr:`~aybiza.processors.vad.VADProcessor.silent_s`).
The final then settles it: the same words keep the guess (nothing is asked
twice); other words discard it and start a new one on the final, as when the
caller goes on. Everything else (holding, tools waiting, the ledger) is as for
a guess on a final.

Only text is held, not audio: the voice starts on the first sentence once the
turn is confirmed, so a confirmation after the model's first sentence costs
nothing and one before it costs at most the voice's first-audio time.

A discarded reply still cost tokens. If the provider reported its usage
before the discard, the ledger has it; otherwise the input (the request's
characters) and what was written so far are estimated at four characters a
token and added to the provider's tokens. Every tentative reply ends on the
ledger as ``used`` or ``discarded`` (``CallLedger.preempted``, the
``aybiza_preemptions_total`` metric).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from ..pipeline import (
    AgentText,
    AgentTurnDone,
    Frame,
    Interruption,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Stage,
    Transcript,
    UserTurn,
)
from .cache import WrappingProcessor
from .llm.reply import ReplyProcessor
from .turns import is_backchannel

__all__ = ["PreemptiveReplies", "same_words"]

_WORDS = re.compile(r"[\w']+")
_CHARS_PER_TOKEN = 4  # the usual estimate for English text


def same_words(a: str, b: str) -> bool:
    """Whether two transcripts hold the same words (case and punctuation aside)."""
    return _WORDS.findall(a.lower()) == _WORDS.findall(b.lower())


@dataclass(slots=True)
class _Tentative:
    """A reply started before the turn was confirmed."""

    text: str
    turn_id: int
    history_len: int
    started: float
    confirmed: anyio.Event = field(default_factory=anyio.Event)
    held: list[Frame] = field(default_factory=list)
    said_chars: int = 0


class PreemptiveReplies(WrappingProcessor):
    """Starts the model on a final transcript before the turn ends; holds, releases or discards its reply."""

    name = "preempt"

    def __init__(self, inner: Processor, model: ReplyProcessor, *, settle_timeout_s: float = 1.0,
                 interim_stable_s: float = 0.0, caller_quiet_s: Callable[[], float] | None = None) -> None:
        super().__init__(inner)
        self.model = model
        self.settle_timeout_s = settle_timeout_s
        self.interim_stable_s = interim_stable_s  # 0: guesses on finals only
        self.caller_quiet_s = caller_quiet_s  # how long the VAD has heard no voice (none: no interim guesses)
        self._interim = ""  # the latest interim hypothesis of the open turn (after its finals so far)
        self._interim_at = 0.0
        self._watching = False
        self._lock = anyio.Lock()  # the interim watcher and the frames take turns at the tentative reply
        self.used = 0
        self.discarded = 0
        self._tentative: _Tentative | None = None
        self._parts: list[str] = []
        self._language = "en"
        self._turn_open = False  # the caller is speaking, or paused with the end of turn not yet confirmed
        self._last_turn_id = 0
        self._swallow = 0  # our own Interruptions coming back from the inner stage
        self._rollback: int | None = None  # history length to restore once a discarded reply has finished
        model.turn_gate = self._turn_gate

    # -- frames in ------------------------------------------------------------------------------

    async def process(self, frame: Frame) -> None:
        """Track the caller's turn; start, confirm or discard the tentative reply."""
        async with self._lock:
            await self._process(frame)

    async def _process(self, frame: Frame) -> None:
        if isinstance(frame, UserTurn):
            await self._user_turn(frame)
            return
        if isinstance(frame, SpeechStarted):
            self._turn_open = True
        elif isinstance(frame, SpeechStopped):
            self._turn_open = False
            self._interim = ""
            tentative = self._tentative
            if tentative is not None and same_words(tentative.text, " ".join(self._parts)):
                if self.ctx is not None:
                    self.ctx.user_turn_ended_at = frame.at  # the output times voice-to-voice from it
                await self._confirm(tentative)
        elif isinstance(frame, Transcript):
            if frame.final and frame.text.strip():
                self._parts.append(frame.text.strip())
                self._language = frame.language
                self._interim = ""  # the final supersedes it
                await self.inner.process(frame)
                if self._turn_open:
                    await self._guess(" ".join(self._parts))
                return
            if not frame.final and self._turn_open:
                self._heard_interim(frame)
        elif isinstance(frame, Interruption):
            if self._tentative is not None:
                self._forget(self._tentative, reason="barge-in")  # the Interruption itself cancels it
        await self.inner.process(frame)

    def _heard_interim(self, frame: Transcript) -> None:
        """Note an interim hypothesis; the watcher guesses on it once it has been stable long enough."""
        text = " ".join([*self._parts, frame.text.strip()]) if frame.text.strip() else ""
        if not text or self.interim_stable_s <= 0 or self.caller_quiet_s is None:
            return
        if not same_words(text, self._interim):
            self._interim, self._interim_at = text, time.monotonic()
            self._language = frame.language
        if not self._watching and self.tg is not None:
            self._watching = True
            self.tg.start_soon(self._watch_interim)

    async def _watch_interim(self) -> None:
        """Guess on the open turn's interim once its words and the caller have both been still for long enough."""
        try:
            while self._interim:
                wait = self._interim_at + self.interim_stable_s - time.monotonic()
                quiet = self.caller_quiet_s() if self.caller_quiet_s is not None else 0.0
                if wait <= 0 and quiet >= self.interim_stable_s:
                    async with self._lock:
                        text, self._interim = self._interim, ""
                        if text and self._turn_open:
                            await self._guess(text)
                    return
                await anyio.sleep(max(wait, self.interim_stable_s - quiet, 0.01))
        finally:
            self._watching = False

    async def _guess(self, text: str) -> None:
        """New words while the turn is open: (re)start the tentative reply on them."""
        tentative = self._tentative
        if tentative is not None:
            if same_words(tentative.text, text):
                return
            await self._discard(tentative, reason="the caller went on")
        tools = self.model.tools
        if is_backchannel(text) or (tools is not None and tools.wants_speech):
            return  # "uh-huh" makes no turn; words a tool waits for are not a question
        await self._settle()
        turn_id = self._last_turn_id + 1
        tentative = _Tentative(text, turn_id, len(self.model.history), time.monotonic())
        self._tentative = tentative
        if self.ctx is not None:
            self.ctx.ledger.turn = turn_id  # the model's timings belong to the turn it answers
            self.ctx.ledger.open_turn = turn_id  # and so do the recogniser's finals until it is confirmed
            self.ctx.log.debug("preempt: replying to turn %d before it is confirmed", turn_id)
        await self.inner.process(UserTurn(text=text, turn_id=turn_id, language=self._language))

    async def _user_turn(self, turn: UserTurn) -> None:
        """The turn-taker's confirmed turn: the tentative reply's if the words match, else answered anew."""
        self._parts = []
        self._turn_open = False
        self._last_turn_id = turn.turn_id
        if self.ctx is not None:
            self.ctx.ledger.open_turn = None  # the turn is confirmed: later finals belong to the next one
        tentative = self._tentative
        if tentative is not None:
            if tentative.turn_id == turn.turn_id and same_words(tentative.text, turn.text):
                ctx = self.ctx
                if (ctx is not None and tentative.confirmed.is_set()
                        and Stage.VOICE_TO_VOICE.value in ctx.ledger.timings(turn.turn_id)):
                    ctx.user_turn_ended_at = None  # the turn-taker set it again, after the reply was heard
                await self._confirm(tentative)
                self._tentative = None
                return
            await self._discard(tentative, reason="the confirmed turn has other words")
        await self._settle()
        await self.inner.process(turn)

    # -- frames out -----------------------------------------------------------------------------

    async def from_inner(self, frame: Frame) -> None:
        """Hold the tentative reply's words until the turn is confirmed; drop our own interruptions."""
        if isinstance(frame, Interruption) and self._swallow:
            self._swallow -= 1
            return
        tentative = self._tentative
        if (tentative is not None and not tentative.confirmed.is_set()
                and isinstance(frame, AgentText | AgentTurnDone) and frame.turn_id == tentative.turn_id):
            tentative.held.append(frame)
            if isinstance(frame, AgentText):
                tentative.said_chars += len(frame.text)
            return
        await self.push(frame)

    # -- outcomes -------------------------------------------------------------------------------

    async def _confirm(self, tentative: _Tentative) -> None:
        if tentative.confirmed.is_set():
            return
        tentative.confirmed.set()
        self.used += 1
        ctx = self.ctx
        if ctx is not None:
            ctx.ledger.preempted("used")
            ctx.log.debug("preempt: turn %d confirmed (%d frames held)", tentative.turn_id, len(tentative.held))
        held, tentative.held = tentative.held, []
        for frame in held:
            await self.push(frame)

    async def _discard(self, tentative: _Tentative, *, reason: str) -> None:
        """Cancel the tentative reply (interrupting it downstream only if the caller already heard it)."""
        heard = tentative.confirmed.is_set()
        self._forget(tentative, reason=reason)
        if not heard:
            self._swallow += 1
        await self.inner.process(Interruption(at=time.monotonic()))

    def _forget(self, tentative: _Tentative, *, reason: str) -> None:
        """Book a discarded reply: the count, its tokens, and the history to restore."""
        self._tentative = None
        self._rollback = tentative.history_len
        if tentative.confirmed.is_set():
            return  # it was used (and heard): a barge-in or a late word, not a wasted guess
        self.discarded += 1
        ctx = self.ctx
        if ctx is None:
            return
        ctx.ledger.turn = self._last_turn_id
        ctx.ledger.open_turn = None
        ctx.ledger.preempted("discarded")
        ctx.log.debug("preempt: turn %d discarded (%s)", tentative.turn_id, reason)
        if not tentative.held or not isinstance(tentative.held[-1], AgentTurnDone):
            # Cut short before the provider reported usage: estimate what the request cost.
            prompt = len(self.model.system_prompt) + sum(len(m.text) for m in self.model.history)
            ctx.ledger.add_tokens(self.model.model_id, prompt // _CHARS_PER_TOKEN + 1,
                                  tentative.said_chars // _CHARS_PER_TOKEN)

    async def _settle(self) -> None:
        """After a discard: wait for the cancelled reply to finish, then undo what it added to the history."""
        if self._rollback is None:
            return
        with anyio.move_on_after(self.settle_timeout_s):
            while not self.model.idle:  # noqa: ASYNC110 - the worker has no event; a few ms at most
                await anyio.sleep(0.002)
        del self.model.history[self._rollback :]
        self._rollback = None

    async def _turn_gate(self, turn_id: int) -> None:
        """Awaited by the model before it runs a tool or apologises for an error: a guess waits for its turn.

        A discarded guess is cancelled while it waits, so its tool never runs and its error is never heard.
        """
        tentative = self._tentative
        if tentative is not None and tentative.turn_id == turn_id:  # not a confirmed turn's, answered before it
            await tentative.confirmed.wait()
