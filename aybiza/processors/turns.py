"""Turn-taking: when the caller's turn ends, and barge-in.

The VAD stage says when speech starts and stops; the STT stage says what
was said. A turn ends at the first final transcript after the caller
stopped speaking (or, if the recogniser sent its finals earlier, after a
short grace period). Speech that starts while the caller hears the agent
(the output steers :class:`AgentSpeaking` up the control path) is a
barge-in: an :class:`Interruption` goes downstream *before* the
``SpeechStarted``, so model, TTS and output drop the agent's reply at once.

Not every sound over the agent is a barge-in. The VAD already ignores
speech shorter than its ``barge_in_start_ms`` (a click, a short cough). What
is left and turns out short (at most ``backchannel_max_s``) is taken for a
false interruption as soon as it stops: an :class:`AgentResume` goes
downstream and the agent goes on from the sentence it was cut in (the TTS
stage keeps it), within a second. Its transcript then decides: no words (a
cough, a door) or only a backchannel ("uh-huh", "okay", "right") makes no
turn; anything else was a short barge-in after all ("no", "stop"): the agent
is interrupted again and the words are the caller's turn.
"""

from __future__ import annotations

import logging
import re
import time

import anyio
from anyio.abc import TaskGroup

from ..pipeline import (
    DTMF,
    AgentResume,
    AgentSpeaking,
    CallContext,
    Frame,
    Interruption,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    UserTurn,
)

__all__ = ["BACKCHANNELS", "TurnTaker", "is_backchannel"]

BACKCHANNELS = frozenset(
    """uh-huh uh huh mm-hmm mhm mm hmm hm um uh ah oh okay ok yeah yep yup right sure alright
    you vale claro ajá ouais d'accord genau""".split()
)
"""Words a listener says to show they are listening, not to take the turn (en, es, fr, de)."""

_WORDS = re.compile(r"[\w'-]+")


def is_backchannel(text: str) -> bool:
    """True when ``text`` holds nothing but backchannel words (or nothing at all).

    A hyphenated word counts when it is one ("mm-hmm") or all its parts are: recognisers spell the same sound
    "uh-huh", "uh huh" or "uh-uh" (whisper's greedy decode of an "uh-huh" over the line).
    """
    return all(word in BACKCHANNELS or all(part in BACKCHANNELS for part in word.split("-") if part)
               for word in _WORDS.findall(text.lower()))


class TurnTaker(Processor):
    """Aggregates final transcripts into user turns and raises barge-in."""

    name = "turns"
    consumes = frozenset({SpeechStarted, SpeechStopped, Transcript, DTMF, AgentSpeaking})
    produces = frozenset({UserTurn, Interruption, AgentResume})

    def __init__(self, *, final_grace_s: float = 0.3, final_timeout_s: float = 5.0, barge_in: bool = True,
                 backchannel_max_s: float = 1.0, backchannel_wait_s: float = 3.0) -> None:
        super().__init__()
        self.final_grace_s = final_grace_s
        self.final_timeout_s = final_timeout_s
        self.barge_in = barge_in
        self.backchannel_max_s = backchannel_max_s
        self.backchannel_wait_s = backchannel_wait_s
        self._barged_at: float | None = None  # an interruption not yet known to be real
        self._maybe_false = False  # it was short: the agent went on, and its words decide
        self._parts: list[str] = []
        self._alternatives: tuple[str, ...] = ()
        self._language = "en"
        self._speaking = False
        self._agent_speaking = False
        self._stopped_at: float | None = None
        self._turn_id = 0
        self._deadline: anyio.CancelScope | None = None
        self._tg: TaskGroup | None = None

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        await super().start(ctx, tg)
        self._tg = tg
        self._language = ctx.language

    async def control(self, frame: Frame) -> None:
        """Track whether the caller hears the agent (what makes speech a barge-in)."""
        if isinstance(frame, AgentSpeaking):
            self._agent_speaking = frame.speaking
        await self.steer(frame)

    async def process(self, frame: Frame) -> None:
        if isinstance(frame, SpeechStarted):
            await self._speech_started(frame)
        elif isinstance(frame, SpeechStopped):
            self._speaking = False
            self._stopped_at = frame.at
            await self.push(frame)
            if self._barged_at is not None:
                self._maybe_false = frame.at - self._barged_at <= self.backchannel_max_s and not self._parts
                self._barged_at = None
                if self._maybe_false:
                    await self._resume()
            self._arm(self.backchannel_wait_s if self._maybe_false else
                      self.final_grace_s if self._parts else self.final_timeout_s)
        elif isinstance(frame, Transcript):
            await self.push(frame)
            if frame.final and self._maybe_false:
                self._maybe_false = False
                if is_backchannel(frame.text):
                    self._disarm()
                    self._stopped_at = None
                    if self.ctx is not None:
                        self.ctx.log.info("false interruption: a backchannel")
                    return
                if self.ctx is not None:  # a short barge-in after all: stop the agent again
                    self.ctx.log.info("barge-in: short words over the agent")
                await self.push(Interruption(at=time.monotonic()))
            self._barged_at = None
            if frame.final and frame.text.strip():
                # n-best hypotheses stand for the whole turn only when it is one transcript
                self._alternatives = frame.alternatives if not self._parts else ()
                self._parts.append(frame.text.strip())
                self._language = frame.language
                if not self._speaking:
                    await self._end_turn()
        elif isinstance(frame, DTMF):
            if self.ctx is not None:
                self.ctx.digits += frame.digit
                self.ctx.log.debug("caller pressed a key")
            await self.push(frame)
        else:
            await self.push(frame)

    async def _speech_started(self, frame: SpeechStarted) -> None:
        self._speaking = True
        self._disarm()
        ctx = self.ctx
        if self.barge_in and ctx is not None and self._agent_speaking:
            self._agent_speaking = False
            ctx.log.info("barge-in: caller spoke over the agent")
            ctx.ledger.interruptions += 1
            self._barged_at = frame.at
            await self.push(Interruption(at=frame.at))
        elif self._maybe_false:
            self._maybe_false = False  # more speech: a real turn after all, whatever the short bit was
        await self.push(frame)

    async def _resume(self) -> None:
        """Short speech over the agent: let it go on (the transcript, when it comes, may still take the turn)."""
        if self.ctx is not None:
            self.ctx.log.info("short speech over the agent: the agent goes on")
        await self.push(AgentResume(at=time.monotonic()))

    async def _end_turn(self) -> None:
        self._disarm()
        text = " ".join(self._parts)
        self._parts = []
        ended_at = self._stopped_at
        self._stopped_at = None
        if not text:
            return
        self._turn_id += 1
        if self.ctx is not None:
            self.ctx.user_turn_ended_at = ended_at
            self.ctx.ledger.turn = self._turn_id
            self.ctx.log.info("caller turn %d (%d words)", self._turn_id, len(text.split()))
            if self.ctx.log.isEnabledFor(logging.DEBUG):  # the caller's words: DEBUG only, redacted like the record
                self.ctx.log.debug("caller turn %d: %s", self._turn_id, self.ctx.ledger.redact(text))
        alternatives, self._alternatives = self._alternatives, ()
        await self.push(UserTurn(text=text, turn_id=self._turn_id, language=self._language,
                                 speech_ended_at=ended_at, alternatives=alternatives))

    def _arm(self, delay: float) -> None:
        self._disarm()
        if self._tg is not None:
            self._tg.start_soon(self._expire, delay)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    async def _expire(self, delay: float) -> None:
        with anyio.CancelScope() as scope:
            self._deadline = scope
            await anyio.sleep(delay)
            self._deadline = None
            if not self._speaking:
                if self._maybe_false and not self._parts:
                    self._maybe_false = False
                    self._stopped_at = None
                    if self.ctx is not None:
                        self.ctx.log.info("false interruption: no words")
                    return
                if not self._parts and self.ctx is not None:
                    self.ctx.log.debug("speech without a transcript; no turn")
                    self._stopped_at = None
                    return
                await self._end_turn()
