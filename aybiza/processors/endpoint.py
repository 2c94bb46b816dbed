"""End of turn: VAD silence and a semantic model together, so a finished question is answered sooner
and a pause in the middle of a sentence is not taken for the end.

The VAD stage ends a speech segment after a short silence (the profile's
``stop_ms``). This stage, placed right after it, holds that ``SpeechStopped``
back and asks the end-of-turn model (:class:`~aybiza.processors.smart_turn.SmartTurnModel`,
in a worker thread) whether the words so far make a finished turn:

* probability at or above the profile's threshold: the ``SpeechStopped`` goes
  on at once (the recogniser and turn-taking act on it);
* below: it waits; speech that starts again within ``max_silence_ms`` of the
  last voiced audio continues the same turn (the held stop and the new
  ``SpeechStarted`` are both dropped, so the recogniser hears one utterance);
  otherwise the stop goes on when that silence is reached.

A turn with less than ``short_speech_ms`` of speech ("yes", "no", a name)
gives the model too little context: ``short_threshold`` applies to it.
Short speech that began while the caller heard the agent (the output steers
:class:`~aybiza.pipeline.frames.AgentSpeaking`) is released at once: it is
most likely a backchannel or a noise, and turn-taking must know soon to let
the agent go on.

Calibrated for the telephone band: on human speech through 8 kHz μ-law the
model is over-confident at pauses after "the", "de", "and" (its probability
separates finished utterances from such pauses with an AUC of only 0.59 on
``benchmarks/corpus/turns.py``'s cases, where 16 kHz audio does much better).
:func:`calibrated` therefore combines the model's log-odds with a prosodic
cue measured on the same audio: the level of the last 200 ms of speech
against the utterance's median (speakers fade at an end). A logistic
combination fitted on one set of cases (seed 7) reaches a cross-validated
AUC of 0.69. (Final pitch lowering added a little more on that set, but it
marks statements: it pushed rising questions, what callers mostly say, to
"not finished"; it is left out.) The profiles' thresholds apply to the
calibrated probability and were chosen on that set; ``benchmarks/endpoint.py``
measures them on another (seed 11).
The words help where the audio cannot: a recogniser that hears the turn as it
goes (Deepgram's interims; whisper's decode at the pause) steers its text so
far up as :class:`~aybiza.pipeline.frames.HeardSoFar`, and a turn whose words
stop on an article, a possessive or a conjunction (:mod:`.turn_words`) waits
for the silence limit whatever the model said. Only words that cover the
audio up to the caller's last sound count (a streaming recogniser's interim
lags the audio: "cancel my" while the caller has said "cancel my appointment"
would hold a finished turn). The stage does not wait for words: none such in
hand at the decision, the audio decides alone.
The three profiles trade speed for patience (``end_of_turn`` in Settings).
:class:`EndOfTurnPolicy` is the decision without I/O, shared by the stage
and the benchmark.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.to_thread
import numpy as np
from anyio.abc import TaskGroup

from ..codecs import resample_samples
from ..pipeline import (
    AgentSpeaking,
    CallContext,
    EndOfCall,
    Frame,
    HeardSoFar,
    InputAudio,
    Processor,
    SpeechStarted,
    SpeechStopped,
)
from .smart_turn import WINDOW_S
from .turn_scoring import score_unless_decided
from .turn_words import ends_open

__all__ = ["PROFILES", "EndOfTurnPolicy", "EndOfTurnProfile", "EndOfTurnStage", "TurnScorer", "calibrated",
           "end_level_db"]

TurnScorer = Callable[[bytes, int], float]
"""``probability(pcm16, sample_rate)``: how sure the model is that the turn is over (blocking)."""


# Logistic combination (standardised features): the model's log-odds and the end's level (dB re the median).
_MEAN = (1.9907, -7.2072)
_SCALE = (1.9916, 6.1288)
_WEIGHTS = (0.4453, -0.7556)
_BIAS = 0.1730


def end_level_db(pcm16: bytes, sample_rate: int) -> float:
    """Level of the last 200 ms of speech minus the median speech level, dB (speakers fade at an end)."""
    samples = resample_samples(pcm16, sample_rate, 8000).astype(np.float64) / 32768.0
    frames = samples[: samples.size // 160 * 160].reshape(-1, 160)
    if frames.shape[0] < 10:
        return 0.0
    levels = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)
    active = np.flatnonzero(levels > levels.max() - 30)
    if active.size < 10:
        return 0.0
    last = int(active[-1])
    return float(levels[max(0, last - 9) : last + 1].mean() - np.median(levels[active]))


def calibrated(probability: float, end_db: float) -> float:
    """The model's probability corrected for the telephone band with the end's level (see the module doc)."""
    p = min(max(probability, 1e-4), 1 - 1e-4)
    features = (math.log(p / (1 - p)), end_db)
    z = _BIAS + sum(w * (x - m) / s for w, x, m, s in zip(_WEIGHTS, features, _MEAN, _SCALE, strict=True))
    return 1.0 / (1.0 + math.exp(-z))


@dataclass(frozen=True, slots=True)
class EndOfTurnProfile:
    """How eager the end of turn is: the VAD silence that triggers the model, thresholds, the last resort."""

    name: str
    stop_ms: int
    threshold: float
    max_silence_ms: int
    short_speech_ms: int = 800
    short_threshold: float = 0.5


PROFILES: dict[str, EndOfTurnProfile] = {
    "fast": EndOfTurnProfile("fast", stop_ms=160, threshold=0.5, max_silence_ms=900, short_threshold=0.4),
    "balanced": EndOfTurnProfile("balanced", stop_ms=160, threshold=0.55, max_silence_ms=1300, short_threshold=0.45),
    "patient": EndOfTurnProfile("patient", stop_ms=160, threshold=0.7, max_silence_ms=1300, short_threshold=0.6),
}
"""The ``end_of_turn`` settings; ``benchmarks/endpoint.py`` measures each on telephone-band human speech."""


class EndOfTurnPolicy:
    """The decision without I/O: given the model's probability and how much speech the turn held."""

    __slots__ = ("profile",)

    def __init__(self, profile: EndOfTurnProfile) -> None:
        self.profile = profile

    def complete(self, probability: float, speech_s: float, words: str = "", language: str = "en") -> bool:
        """Whether the turn ends at the first silence check (``words``: the turn's text so far, if known)."""
        if words and ends_open(words, language):
            return False
        short = speech_s * 1000 < self.profile.short_speech_ms
        return probability >= (self.profile.short_threshold if short else self.profile.threshold)

    @property
    def max_silence_s(self) -> float:
        """Silence after the last voiced audio that ends a turn whatever the model said."""
        return self.profile.max_silence_ms / 1000


_COVER_SLACK_S = 0.06  # words may end this much before the VAD's last voiced frame ends (frame rounding)


def covers(words: HeardSoFar, speech_end: float) -> bool:
    """Whether ``words`` were heard on the audio up to ``speech_end`` (or say nothing of what they cover)."""
    return words.upto is None or words.upto >= speech_end - _COVER_SLACK_S


class _TurnAudio:
    """The current turn's audio (the last ``WINDOW_S`` seconds: what the model reads) and its length."""

    __slots__ = ("chunks", "seconds", "kept_s", "rate")

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.seconds = 0.0
        self.kept_s = 0.0
        self.rate = 0

    def add(self, frame: InputAudio) -> None:
        if frame.sample_rate != self.rate:
            self.chunks.clear()
            self.kept_s = 0.0
            self.rate = frame.sample_rate
        self.chunks.append(frame.pcm)
        self.seconds += frame.duration
        self.kept_s += frame.duration
        while self.chunks and self.kept_s - len(self.chunks[0]) / (2 * self.rate) >= WINDOW_S:
            self.kept_s -= len(self.chunks.popleft()) / (2 * self.rate)

    def pcm(self) -> bytes:
        return b"".join(self.chunks)


class EndOfTurnStage(Processor):
    """Holds the VAD's ``SpeechStopped`` until the end-of-turn model (or the silence limit) says the turn is over."""

    __slots__ = ("policy", "_score", "_limiter", "_audio", "_held", "_held_scope", "_tg", "_agent_speaking",
                 "_over_agent", "_words")

    name = "endpoint"
    consumes = frozenset({InputAudio, SpeechStarted, SpeechStopped, AgentSpeaking})
    produces = frozenset({SpeechStopped})
    over_agent_max_s = 1.2
    """Speech over the agent this short (pre-roll and the stop's silence included) is released at once."""

    def __init__(
        self,
        score: TurnScorer,
        profile: EndOfTurnProfile | str = "balanced",
        *,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        super().__init__()
        self.policy = EndOfTurnPolicy(PROFILES[profile] if isinstance(profile, str) else profile)
        self._words: HeardSoFar | None = None  # the recogniser's text of this turn so far
        self._score = score
        self._limiter = limiter
        self._audio = _TurnAudio()
        self._held: SpeechStopped | None = None
        self._held_scope: anyio.CancelScope | None = None
        self._tg: TaskGroup | None = None
        self._agent_speaking = False
        self._over_agent = False

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Bind the call; decisions run as tasks in its group."""
        await super().start(ctx, tg)
        self._tg = tg

    async def control(self, frame: Frame) -> None:
        """Track whether the caller hears the agent (speech over it is judged at once); keep the turn's words."""
        if isinstance(frame, HeardSoFar):  # optional input (not every recogniser sends it): not in ``consumes``
            self._words = frame
        elif isinstance(frame, AgentSpeaking):
            self._agent_speaking = frame.speaking
        await self.steer(frame)

    async def process(self, frame: Frame) -> None:
        """Collect the turn's audio; hold speech stops until the turn is over; drop a pause's restart."""
        if type(frame) is InputAudio:
            if frame.voiced is not False:
                self._audio.add(frame)
            await self.push(frame)
        elif isinstance(frame, SpeechStarted):
            if self._held is not None:
                self._cancel_held()  # the caller went on after a pause: the same turn continues
                if self.ctx is not None:
                    self.ctx.log.debug("endpoint: pause, the turn goes on")
                return
            self._audio = _TurnAudio()
            self._words = None
            self._over_agent = self._agent_speaking
            await self.push(frame)
        elif isinstance(frame, SpeechStopped):
            await self._release()  # a stop still held (should not happen) goes first
            self._held = frame
            if self._over_agent and self._audio.seconds <= self.over_agent_max_s:
                await self._release()
            elif self._tg is not None:
                self._tg.start_soon(self._decide, frame, name="endpoint-decide")
            else:
                await self._release()
        elif isinstance(frame, EndOfCall):
            await self._release()
            await self.push(frame)
        else:
            await self.push(frame)

    async def stop(self) -> None:
        """Forget a held stop (the call is over)."""
        self._cancel_held()

    def _cancel_held(self) -> None:
        self._held = None
        if self._held_scope is not None:
            self._held_scope.cancel()
            self._held_scope = None

    async def _release(self) -> None:
        held = self._held
        if held is None:
            return
        self._cancel_held()
        await self.push(held)

    def _words_end_open(self, stopped: SpeechStopped) -> bool:
        """Whether the words heard up to this pause already stop on a word no turn ends on."""
        words = self._words
        return words is not None and covers(words, stopped.at) and ends_open(words.text, words.language)

    async def _decide(self, stopped: SpeechStopped) -> None:
        with anyio.CancelScope() as scope:
            self._held_scope = scope
            pcm, rate, speech_s = self._audio.pcm(), self._audio.rate, self._audio.seconds
            scored: float | None = 1.0
            if self._words_end_open(stopped):
                scored = None  # the turn waits for the silence limit whatever the model says: not asked
            elif pcm and rate:
                # capacity: a pause the silence limit has already ended by the time the worker is free is not scored
                scored = await anyio.to_thread.run_sync(score_unless_decided, self._score, pcm, rate,
                                                        stopped.at + self.policy.max_silence_s,
                                                        limiter=self._limiter, abandon_on_cancel=True)
            if self._held is not stopped:
                return
            probability = 0.0 if scored is None else scored
            words = self._words if self._words is not None and covers(self._words, stopped.at) else None
            complete = self.policy.complete(probability, speech_s, words.text if words else "",
                                            words.language if words else "en")
            ctx = self.ctx
            if ctx is not None and ctx.log.isEnabledFor(logging.DEBUG):
                ctx.log.debug("endpoint: p=%s after %.2f s of speech, words %r: %s",
                              "(not scored)" if scored is None else f"{probability:.2f}", speech_s,
                              words.text[-40:] if words else None, "end of turn" if complete else "waiting")
            if not complete:
                await anyio.sleep(max(0.0, stopped.at + self.policy.max_silence_s - time.monotonic()))
            if self._held is stopped:
                self._held = None
                self._held_scope = None
                await self.push(stopped)
