"""Scripted STT, model and TTS stages with set timings, and a speech stack built from them.

The benchmarks need providers whose latency is known exactly, so that what
is left of a turn's latency is ours. :class:`ScriptedSTT` sends a final
transcript ``stt_final_ms`` after ``SpeechStopped`` reaches it,
:class:`ScriptedLLM` its first sentence ``llm_first_token_ms`` after the
``UserTurn``, :class:`ScriptedTTS` its first audio ``tts_first_byte_ms`` after
the ``AgentText``. They keep the frame contracts of the real stages (whisper,
the FAQ responder, the TTS stage): I/O waits run in a :class:`Worker`, every
frame they do not consume is forwarded, barge-in drops the reply in progress.

:class:`ScriptedStack` has :class:`~aybiza.stack.SpeechStack`'s interface and
builds the real stack's chain (quality meter, VAD, language ID, turn-taker,
call journal) around the scripted providers. It can time every call: a :class:`FrameClock`
at the pipeline's entry measures each frame's lateness against real time
(into a :class:`LatencyHistogram`), and :class:`CallStamps` keeps monotonic
stamps of each turn's hand-offs (see :class:`TurnStamps`).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import anyio
import numpy as np
from anyio.abc import TaskGroup

from ..agents import AgentConfig
from ..config import Settings
from ..pipeline import (
    AgentText,
    AgentTurnDone,
    CallContext,
    Frame,
    InputAudio,
    Interruption,
    OutputAudio,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    UserTurn,
    Worker,
)
from ..processors.quality import QualityProcessor
from ..processors.turns import TurnTaker
from ..processors.vad import VADProcessor

__all__ = [
    "CallStamps",
    "FrameClock",
    "LatencyHistogram",
    "ScriptedLLM",
    "ScriptedSTT",
    "ScriptedStack",
    "ScriptedTTS",
    "ScriptedTimings",
    "TurnStamps",
    "bench_agent",
]


@dataclass(frozen=True, slots=True)
class ScriptedTimings:
    """How the scripted providers behave: their delays and what they say."""

    stt_final_ms: float = 150.0
    llm_first_token_ms: float = 350.0
    llm_next_sentence_ms: float = 40.0
    tts_first_byte_ms: float = 100.0
    tts_chunk_ms: float = 100.0  # audio per OutputAudio chunk
    tts_speed: float = 10.0  # times faster than real time after the first chunk
    tts_sample_rate: int = 8000  # what cloud TTS sends for a phone call; piper would be 22050 (resampled)
    tts_seconds_per_char: float = 0.06
    transcripts: tuple[str, ...] = ("what time do you open tomorrow",)
    reply: tuple[str, ...] = ("We open at nine in the morning.", "Is there anything else I can help with?")

    def __post_init__(self) -> None:
        delays = (self.stt_final_ms, self.llm_first_token_ms, self.llm_next_sentence_ms, self.tts_first_byte_ms)
        if min(delays) < 0 or self.tts_chunk_ms <= 0 or self.tts_speed <= 0 or self.tts_sample_rate <= 0:
            raise ValueError("scripted delays must be >= 0; chunk length, speed and rate > 0")
        if not self.transcripts or not self.reply:
            raise ValueError("scripted transcripts and reply must not be empty")


@dataclass(slots=True)
class TurnStamps:
    """Monotonic stamps of one caller turn on its way through the scripted stack.

    ``window_chunk`` is the number of the inbound frame whose arrival completed
    the VAD's silence window (1 = the call's first media frame); the
    ``*_deadline`` stamps are when the scripted provider was due to answer,
    so ``stamp - deadline`` is how late the event loop ran it.
    """

    speech_stopped: float  # SpeechStopped reached the STT stage
    speech_ended_at: float  # SpeechStopped.at: end of the last voiced audio
    window_chunk: int
    window_arrived: float  # arrival (captured_at) of the frame that completed the window
    stt_deadline: float
    transcript: float | None = None  # final Transcript pushed
    turn_id: int | None = None
    user_turn: float | None = None  # UserTurn reached the model stage
    llm_deadline: float | None = None
    first_text: float | None = None  # first AgentText pushed
    tts_in: float | None = None  # first AgentText reached the TTS stage
    tts_deadline: float | None = None
    first_audio: float | None = None  # first OutputAudio pushed

    @property
    def complete(self) -> bool:
        """Every stamp from speech stop to first audio is set."""
        return self.first_audio is not None and self.first_text is not None and self.user_turn is not None

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for JSON)."""
        return asdict(self)


class CallStamps:
    """Per-call stamp book shared by the scripted stages and the frame clock."""

    __slots__ = ("call_id", "frames", "last_frame_at", "turns", "_by_turn_id")

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.frames = 0
        self.last_frame_at = 0.0
        self.turns: list[TurnStamps] = []
        self._by_turn_id: dict[int, TurnStamps] = {}

    def speech_stopped(self, stopped: SpeechStopped, deadline: float) -> TurnStamps:
        """Open a turn record when the STT stage sees speech stop."""
        stamps = TurnStamps(time.monotonic(), stopped.at, self.frames, self.last_frame_at, deadline)
        self.turns.append(stamps)
        return stamps

    def user_turn(self, turn: UserTurn, arrived: float, deadline: float) -> None:
        """The model stage got ``turn``: attach it to the latest transcribed, unclaimed record."""
        for stamps in reversed(self.turns):
            if stamps.transcript is not None and stamps.turn_id is None:
                stamps.turn_id = turn.turn_id
                stamps.user_turn = arrived
                stamps.llm_deadline = deadline
                self._by_turn_id[turn.turn_id] = stamps
                return

    def for_turn(self, turn_id: int) -> TurnStamps | None:
        """The record of caller turn ``turn_id`` (None for the greeting or unknown turns)."""
        return self._by_turn_id.get(turn_id)


async def _sleep_until(deadline: float) -> None:
    await anyio.sleep(max(0.0, deadline - time.monotonic()))


@dataclass(frozen=True, slots=True)
class _Utterance:
    seconds: float
    ended_at: float
    deadline: float
    stamps: TurnStamps | None


class ScriptedSTT(Processor):
    """Utterance STT: a final Transcript ``stt_final_ms`` after SpeechStopped reaches it.

    Consumes ``InputAudio`` (only to count the utterance's length); forwards
    every other frame. Texts come from ``timings.transcripts`` in turn.
    """

    __slots__ = ("timings", "stamps", "min_utterance_seconds", "_seconds", "_collecting", "_worker", "_count")

    name = "stt.scripted"

    def __init__(self, timings: ScriptedTimings | None = None, *, stamps: CallStamps | None = None,
                 min_utterance_seconds: float = 0.1) -> None:
        super().__init__()
        self.timings = timings or ScriptedTimings()
        self.stamps = stamps
        self.min_utterance_seconds = min_utterance_seconds
        self._seconds = 0.0
        self._collecting = False
        self._count = 0
        self._worker: Worker[_Utterance] = Worker(self._transcribe, maxsize=8)

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Start the transcription worker."""
        await super().start(ctx, tg)
        self._worker.start(tg, name=self.name)

    async def stop(self) -> None:
        """Close the worker's queue."""
        await self._worker.close()

    async def process(self, frame: Frame) -> None:
        """Count utterance audio; schedule a transcript when speech stops; forward the rest."""
        if type(frame) is InputAudio:
            if self._collecting:
                self._seconds += frame.duration
            return
        if isinstance(frame, SpeechStarted):
            self._collecting = True
            self._seconds = 0.0
        elif isinstance(frame, SpeechStopped) and self._collecting:
            self._collecting = False
            if self._seconds >= self.min_utterance_seconds:
                deadline = time.monotonic() + self.timings.stt_final_ms / 1000
                stamps = self.stamps.speech_stopped(frame, deadline) if self.stamps is not None else None
                await self._worker.put(_Utterance(self._seconds, frame.at, deadline, stamps))
        await self.push(frame)

    async def _transcribe(self, utterance: _Utterance) -> None:
        ctx = self.ctx
        assert ctx is not None, "ScriptedSTT used before start()"
        await _sleep_until(utterance.deadline)
        texts = self.timings.transcripts
        text = texts[self._count % len(texts)]
        self._count += 1
        ctx.add_usage("stt_seconds", utterance.seconds)
        now = time.monotonic()
        if utterance.stamps is not None:
            utterance.stamps.transcript = now
        ctx.record_timing("stt_final", now - utterance.ended_at)
        await self.push(Transcript(text, final=True, language=ctx.language, confidence=1.0,
                                   speech_ended_at=utterance.ended_at))


@dataclass(frozen=True, slots=True)
class _Reply:
    turn: UserTurn
    arrived: float
    deadline: float


class ScriptedLLM(Processor):
    """The model stage: answers each UserTurn with ``timings.reply``, first sentence after ``llm_first_token_ms``."""

    __slots__ = ("timings", "stamps", "_worker")

    name = "llm.scripted"

    def __init__(self, timings: ScriptedTimings | None = None, *, stamps: CallStamps | None = None) -> None:
        super().__init__()
        self.timings = timings or ScriptedTimings()
        self.stamps = stamps
        self._worker: Worker[_Reply] = Worker(self._answer, maxsize=8)

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Start the answering worker."""
        await super().start(ctx, tg)
        self._worker.start(tg, name=self.name)

    async def stop(self) -> None:
        """Close the worker's queue."""
        await self._worker.close()

    async def process(self, frame: Frame) -> None:
        """Queue caller turns; drop the answer in progress on barge-in; forward everything else."""
        if isinstance(frame, UserTurn):
            if frame.text.strip():
                arrived = time.monotonic()
                deadline = arrived + self.timings.llm_first_token_ms / 1000
                if self.stamps is not None:
                    self.stamps.user_turn(frame, arrived, deadline)
                await self._worker.put(_Reply(frame, arrived, deadline))
            return
        if isinstance(frame, Interruption):
            self._worker.flush()
        await self.push(frame)

    async def _answer(self, reply: _Reply) -> None:
        ctx = self.ctx
        assert ctx is not None, "ScriptedLLM used before start()"
        turn = reply.turn
        await _sleep_until(reply.deadline)
        now = time.monotonic()
        stamps = self.stamps.for_turn(turn.turn_id) if self.stamps is not None else None
        if stamps is not None:
            stamps.first_text = now
        ctx.record_timing("llm_first_token", now - reply.arrived)
        ctx.add_usage("llm_turns", 1)
        for index, sentence in enumerate(self.timings.reply):
            if index:
                await anyio.sleep(self.timings.llm_next_sentence_ms / 1000)
            await self.push(AgentText(sentence, turn.turn_id, turn.language))
        await self.push(AgentTurnDone(turn.turn_id))


@dataclass(frozen=True, slots=True)
class _Speech:
    frame: AgentText | AgentTurnDone
    epoch: int
    arrived: float
    deadline: float  # when the first audio is due


_TONES: dict[tuple[int, float], bytes] = {}


def _tone(sample_rate: int, seconds: float) -> bytes:
    """A quiet 220 Hz tone, cached: every call's audio chunk shares one bytes object."""
    key = (sample_rate, seconds)
    pcm = _TONES.get(key)
    if pcm is None:
        t = np.arange(round(sample_rate * seconds)) / sample_rate
        pcm = (np.sin(2 * np.pi * 220 * t) * 3000).astype("<i2").tobytes()
        _TONES[key] = pcm
    return pcm


class ScriptedTTS(Processor):
    """Speaks AgentText as a tone: first chunk ``tts_first_byte_ms`` after the text arrives, the rest faster
    than real time; AgentTurnDone follows the turn's audio; an Interruption drops it all and is forwarded."""

    __slots__ = ("timings", "stamps", "_worker", "_epoch", "_timed_turn")

    name = "tts.scripted"

    def __init__(self, timings: ScriptedTimings | None = None, *, stamps: CallStamps | None = None) -> None:
        super().__init__()
        self.timings = timings or ScriptedTimings()
        self.stamps = stamps
        self._worker: Worker[_Speech] = Worker(self._speak, maxsize=64)
        self._epoch = 0
        self._timed_turn: int | None = None

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Start the synthesis worker."""
        await super().start(ctx, tg)
        self._worker.start(tg, name=self.name)

    async def stop(self) -> None:
        """Close the worker's queue."""
        await self._worker.close()

    async def process(self, frame: Frame) -> None:
        """Queue agent text and turn ends; on Interruption flush, then forward; pass the rest on."""
        if isinstance(frame, AgentText):
            if frame.text.strip():
                now = time.monotonic()
                deadline = now + self.timings.tts_first_byte_ms / 1000
                stamps = self.stamps.for_turn(frame.turn_id) if self.stamps is not None else None
                if stamps is not None and stamps.tts_in is None:
                    stamps.tts_in, stamps.tts_deadline = now, deadline
                await self._worker.put(_Speech(frame, self._epoch, now, deadline))
        elif isinstance(frame, AgentTurnDone):
            await self._worker.put(_Speech(frame, self._epoch, 0.0, 0.0))
        elif isinstance(frame, Interruption):
            self._epoch += 1
            self._worker.flush()
            await self.push(frame)
        else:
            await self.push(frame)

    async def _speak(self, job: _Speech) -> None:
        if job.epoch != self._epoch:
            return
        frame = job.frame
        if isinstance(frame, AgentTurnDone):
            await self.push(frame)
            return
        ctx = self.ctx
        assert ctx is not None, "ScriptedTTS used before start()"
        timings = self.timings
        ctx.add_usage("tts_chars", len(frame.text))
        chunk_s = timings.tts_chunk_ms / 1000
        chunks = max(1, math.ceil(len(frame.text) * timings.tts_seconds_per_char / chunk_s - 1e-9))
        pcm = _tone(timings.tts_sample_rate, chunk_s)
        timed = frame.turn_id != self._timed_turn
        self._timed_turn = frame.turn_id
        await _sleep_until(job.deadline)
        for index in range(chunks):
            if index:
                await anyio.sleep(chunk_s / timings.tts_speed)
            if job.epoch != self._epoch:
                return
            now = time.monotonic()
            if timed:
                timed = False
                ctx.record_timing("tts_first_byte", now - job.arrived)
                stamps = self.stamps.for_turn(frame.turn_id) if self.stamps is not None else None
                if stamps is not None and stamps.first_audio is None:
                    stamps.first_audio = now
            await self.push(OutputAudio(pcm, timings.tts_sample_rate, frame.turn_id, now))


class LatencyHistogram:
    """Counts of latency samples in 0.1 ms bins up to ``max_ms`` (plus one overflow bin)."""

    __slots__ = ("bin_ms", "counts", "count", "max_seen_ms")

    def __init__(self, max_ms: float = 5000.0, bin_ms: float = 0.1) -> None:
        self.bin_ms = bin_ms
        self.counts = [0] * (int(max_ms / bin_ms) + 1)
        self.count = 0
        self.max_seen_ms = 0.0

    def add(self, seconds: float) -> None:
        """Count one sample."""
        ms = seconds * 1000.0
        index = min(max(int(ms / self.bin_ms), 0), len(self.counts) - 1)
        self.counts[index] += 1
        self.count += 1
        if ms > self.max_seen_ms:
            self.max_seen_ms = ms

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile in ms (upper edge of its bin; the largest sample for the overflow bin)."""
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(q / 100.0 * self.count))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return self.max_seen_ms if index == len(self.counts) - 1 else min((index + 1) * self.bin_ms,
                                                                                  self.max_seen_ms)
        return self.max_seen_ms

    def summary(self, points: Sequence[float] = (50, 90, 99, 99.9)) -> dict[str, float | None]:
        """``{"count", "p50_ms", ..., "max_ms"}`` (percentiles None while empty)."""
        out: dict[str, float | None] = {"count": self.count}
        for q in points:
            out[f"p{q:g}_ms".replace(".", "_")] = round(self.percentile(q), 2) if self.count else None
        out["max_ms"] = round(self.max_seen_ms, 2)
        return out

    def reset(self) -> None:
        """Forget every sample."""
        self.counts = [0] * len(self.counts)
        self.count = 0
        self.max_seen_ms = 0.0


class FrameClock(Processor):
    """First stage of a timed call: counts inbound frames and measures how late each is handled.

    A frame's lateness is the time its handling by the whole synchronous chain
    finished, minus when it was due on a real-time schedule anchored at the
    call's most punctual frame so far (what a jitter buffer would need).
    """

    __slots__ = ("stamps", "on_lateness", "on_frame", "clock", "_audio_s", "_anchor")

    name = "frame-clock"

    def __init__(self, stamps: CallStamps | None = None, on_lateness: Callable[[float], None] | None = None,
                 on_frame: Callable[[], None] | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.stamps = stamps
        self.on_lateness = on_lateness
        self.on_frame = on_frame
        self.clock = clock
        self._audio_s = 0.0
        self._anchor = math.inf

    async def process(self, frame: Frame) -> None:
        """Stamp and forward; measure lateness once the chain has handled the frame."""
        if type(frame) is not InputAudio:
            await self.push(frame)
            return
        stamps = self.stamps
        if stamps is not None:
            stamps.frames += 1
            stamps.last_frame_at = frame.captured_at
        if self.on_frame is not None:
            self.on_frame()
        await self.push(frame)
        offset = self.clock() - self._audio_s
        self._audio_s += frame.duration
        if offset < self._anchor:
            self._anchor = offset
        if self.on_lateness is not None:
            self.on_lateness(offset - self._anchor)


def bench_agent() -> AgentConfig:
    """A minimal agent for scripted calls (id ``default``; answers never cached)."""
    return AgentConfig(id="default", name="Bench", greeting="Hello, thanks for calling. How can I help?",
                       system_prompt="A benchmark agent.", fallback="Sorry, I did not catch that.",
                       cache_answers=False)


class ScriptedStack:
    """SpeechStack's interface over the real edge chain and turn-taker, with scripted providers.

    ``build`` returns the real stack's order with the providers swapped:
    ``quality -> vad -> stt -> language -> turns -> model -> tts``, the model
    inside the call journal when the server gave the stack a call store (as
    the real stack does). The answer cache is left out: it would answer the
    scripted caller's repeated question itself and hide the model's delay.
    ``frame_clock`` puts a :class:`FrameClock` first (feeding ``lateness`` and
    ``frames_in``); ``record_turns`` keeps :class:`CallStamps` for the last
    ``keep_calls`` calls in ``calls``.
    """

    def __init__(self, settings: Settings | None = None, timings: ScriptedTimings | None = None, *,
                 agent: AgentConfig | None = None, frame_clock: bool = True, record_turns: bool = False,
                 quality: bool = True, language: bool = True, keep_calls: int = 2000) -> None:
        self.settings = settings or Settings()
        self.timings = timings or ScriptedTimings()
        self._agent = agent or bench_agent()
        self.frame_clock = frame_clock
        self.record_turns = record_turns
        self.quality = quality
        self.language = language
        self.keep_calls = keep_calls
        self.lateness = LatencyHistogram()
        self.frames_in = 0
        self.calls: OrderedDict[str, CallStamps] = OrderedDict()
        # Set by the server's runtime, as on SpeechStack.
        self.cache: Any = None
        self.store: Any = None
        self.routing: Any = None
        self.on_failover: Callable[[str, str], None] = lambda from_region, to_region: None

    def warm(self) -> None:
        """Load the language detector (the scripted providers have nothing to load)."""
        if self.language:
            from ..processors.language import DEFAULT_LANGUAGES, detector_for

            detector_for(frozenset(DEFAULT_LANGUAGES))

    def agent(self, agent_id: str) -> AgentConfig:
        """The bench agent (any id maps to it)."""
        return self._agent

    def has_agent(self, agent_id: str) -> bool:
        """Only the bench agent's id exists."""
        return agent_id == self._agent.id

    def _count_frame(self) -> None:
        self.frames_in += 1

    def build(self, ctx: CallContext, *, history: Sequence[Mapping[str, str]] = (),
              resumed: bool = False) -> tuple[list[Processor], list[Frame]]:
        """Processors for one call and the greeting that opens it (none for a resumed call)."""
        settings = self.settings
        stamps: CallStamps | None = None
        if self.record_turns:
            stamps = CallStamps(ctx.call_id)
            self.calls[ctx.call_id] = stamps
            while len(self.calls) > self.keep_calls:
                self.calls.popitem(last=False)
        processors: list[Processor] = []
        if self.frame_clock:
            processors.append(FrameClock(stamps, self.lateness.add, self._count_frame))
        if self.quality:
            processors.append(QualityProcessor())
        processors += [
            VADProcessor(aggressiveness=settings.vad_aggressiveness, stop_ms=settings.end_of_turn_ms,
                         preroll_ms=settings.preroll_ms),
            ScriptedSTT(self.timings, stamps=stamps),
        ]
        if self.language:
            from ..processors.language import LanguageProcessor

            processors.append(LanguageProcessor())
        model: Processor = ScriptedLLM(self.timings, stamps=stamps)
        if self.store is not None:
            from ..processors.journal import CallJournal

            model = CallJournal(model, self.store)
        processors += [TurnTaker(barge_in=settings.barge_in), model, ScriptedTTS(self.timings, stamps=stamps)]
        agent = self._agent
        opening: list[Frame] = [] if resumed else [AgentText(agent.greeting, turn_id=0, language=agent.language),
                                                   AgentTurnDone(turn_id=0)]
        return processors, opening
