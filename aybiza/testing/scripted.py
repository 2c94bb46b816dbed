"""Scripted providers at the seams real ones use: a Deepgram client and a Bedrock client with set timings.

The benchmarks need providers whose latency is known exactly, so that what
is left of a turn's latency is ours — and they must time *our* stages, not
re-implementations of them. So the scripted providers replace only what is
on the other side of the wire, the way httpx's ``MockTransport`` replaces a
network: :class:`ScriptedDeepgram` is an ``AsyncDeepgramClient`` look-alike
whose ``listen`` sends the final transcript ``stt_final_ms`` after our
``Finalize`` and whose ``speak`` sends the first audio ``tts_first_byte_ms``
after a turn's first ``Speak``; :class:`ScriptedBedrock` is a
``bedrock-runtime`` client whose ``converse_stream`` streams the reply's
first token ``llm_first_token_ms`` after the request. Our
:class:`~aybiza.processors.stt.deepgram.DeepgramSTT`,
:class:`~aybiza.processors.llm.bedrock.BedrockStreamer` (through
:class:`~aybiza.processors.llm.routed.RoutedBedrock`) and
:class:`~aybiza.processors.tts.deepgram.DeepgramTTS` run unchanged on them:
:func:`scripted_engines` plugs them into a process's engines.

:class:`LatencyHistogram` and :class:`FrameClock` are the benchmarks' instruments.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np

from ..agents import AgentConfig
from ..codecs import lin2ulaw, ulaw2lin
from ..config import Settings
from ..engines import Engines
from ..pipeline import Frame, InputAudio, Processor

__all__ = [
    "FrameClock",
    "LatencyHistogram",
    "ScriptedBedrock",
    "ScriptedDeepgram",
    "ScriptedTimings",
    "bench_agent",
    "scripted_engines",
    "scripted_settings",
]


@dataclass(frozen=True, slots=True)
class ScriptedTimings:
    """How the scripted providers behave: their delays and what they say."""

    stt_final_ms: float = 150.0
    llm_first_token_ms: float = 350.0
    llm_next_sentence_ms: float = 40.0
    tts_first_byte_ms: float = 100.0
    tts_chunk_ms: float = 100.0  # audio per binary message
    tts_speed: float = 10.0  # times faster than real time after the first chunk
    tts_seconds_per_char: float = 0.06
    transcripts: tuple[str, ...] = ("what time do you open tomorrow",)
    reply: tuple[str, ...] = ("We open at nine in the morning.", "Is there anything else I can help with?")
    input_tokens: int = 120
    output_tokens: int = 18
    stt_endpointing: bool = False
    """Also finalise on its own, ``stt_final_ms`` after the speech in the audio ends (Deepgram's endpointing),
    not only after our ``Finalize``: the final then often arrives before our end of turn is confirmed."""
    stt_endpointing_ms: float = 100.0  # the silence that ends the speech for the endpointing (a gap between words not)
    stt_interim_ms: float = 0.0
    """With endpointing: also send interim results (``is_final`` false), as Deepgram does with
    ``interim_results``: the words so far every ``stt_interim_every_ms`` of speech, and the phrase's words
    ``stt_interim_ms`` after its speech pauses (0: no interims)."""
    stt_interim_every_ms: float = 500.0

    def __post_init__(self) -> None:
        delays = (self.stt_final_ms, self.llm_first_token_ms, self.llm_next_sentence_ms, self.tts_first_byte_ms)
        if min(delays) < 0 or self.tts_chunk_ms <= 0 or self.tts_speed <= 0:
            raise ValueError("scripted delays must be >= 0; chunk length and speed > 0")
        if not self.transcripts or not self.reply:
            raise ValueError("scripted transcripts and reply must not be empty")


# -- Deepgram ----------------------------------------------------------------------------

_VOICED_LEVEL = 300.0  # mean |sample| above which the scripted recogniser hears speech (about -40 dBFS)


@dataclass(frozen=True, slots=True)
class _Alternative:
    transcript: str
    confidence: float = 1.0
    languages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Channel:
    alternatives: tuple[_Alternative, ...]


@dataclass(frozen=True, slots=True)
class _Results:
    """The fields of a ``Results`` message our stage reads."""

    channel: _Channel
    start: float
    duration: float
    is_final: bool = True
    from_finalize: bool = True
    speech_final: bool = False  # the recogniser's endpointing ended the utterance
    type: str = "Results"


@dataclass(frozen=True, slots=True)
class _Control:
    type: str  # "Flushed" | "Cleared"


@dataclass(order=True, slots=True)
class _Due:
    """A ``Results`` message the scripted recogniser will send at ``deadline``."""

    deadline: float
    start: float = field(compare=False)
    duration: float = field(compare=False)
    words: bool = field(compare=False)
    finalize: bool = field(compare=False)
    interim: int = field(default=0, compare=False)  # an interim: how many words (-1: all); 0: a final
    voiced_end: int = field(default=0, compare=False)  # an interim: the speech it is about (more speech voids it)


class _ListenConnection:
    """One scripted ``/v1/listen`` socket: a final transcript ``stt_final_ms`` after each Finalize.

    No tasks of its own (the SDK's connection has none either): the messages
    are produced by iterating it, which our stage's receiver does.
    """

    def __init__(self, owner: ScriptedDeepgram, params: dict[str, Any]) -> None:
        self._owner = owner
        rate = int(params.get("sample_rate", 16000))
        self._bytes_per_second = rate * (1 if params.get("encoding") == "mulaw" else 2)
        self._mulaw = params.get("encoding") == "mulaw"
        self._received = 0  # bytes of audio so far
        self._settled = 0  # bytes covered by finals
        self._due: list[_Due] = []  # in deadline order
        self._wake = anyio.Event()
        self._speaking = False  # endpointing: speech heard and not yet finalised
        self._voiced_end = 0
        self._voiced_at = 0.0
        self._finals_out = 0  # bytes covered by the finals sent (an interim about them is void)
        self._phrase_out = 0  # the speech end of the last phrase interim sent
        self._interims = 0  # interims sent in the current speech
        self._next_interim = 0  # bytes received at which the next in-speech interim is due

    async def send_media(self, audio: bytes) -> None:
        if not self._owner.timings.stt_endpointing:
            self._received += len(audio)
            return
        # judged 20 ms at a time, as Deepgram's endpointing hears it, however the client groups its messages
        step = max(2, self._bytes_per_second // 50 // 2 * 2)
        for offset in range(0, len(audio), step):
            self._hear(audio[offset:offset + step])

    def _hear(self, audio: bytes) -> None:
        before, self._received = self._received, self._received + len(audio)
        timings = self._owner.timings
        pcm = np.frombuffer(ulaw2lin(audio) if self._mulaw else audio[: len(audio) // 2 * 2], dtype="<i2")
        every = int(timings.stt_interim_every_ms / 1000 * self._bytes_per_second)
        if pcm.size and float(np.abs(pcm).mean()) > _VOICED_LEVEL:
            if not self._speaking:
                self._interims, self._next_interim = 0, self._received + every
            self._speaking, self._voiced_end, self._voiced_at = True, self._received, time.monotonic()
            if timings.stt_interim_ms > 0 and self._received >= self._next_interim:
                self._interims += 1  # the words so far, while the caller speaks
                self._next_interim += every
                self._queue(_Due(time.monotonic() + timings.stt_interim_ms / 1000, 0.0, 0.0, True, False,
                                 interim=self._interims, voiced_end=self._voiced_end))
            return
        if not self._speaking:
            return
        if timings.stt_interim_ms > 0 and before == self._voiced_end:
            # the first quiet audio after speech: an interim with the phrase's words, unless speech resumes
            self._queue(_Due(self._voiced_at + timings.stt_interim_ms / 1000, 0.0, 0.0, True, False,
                             interim=-1, voiced_end=self._voiced_end))
        if self._received - self._voiced_end >= timings.stt_endpointing_ms / 1000 * self._bytes_per_second:
            # the speech ended: its final comes stt_final_ms after it did
            self._speaking = False
            self._settle(self._voiced_at, self._voiced_end, words=True, finalize=False)

    async def send_keep_alive(self) -> None:
        return None

    async def send_finalize(self) -> None:
        words = not self._owner.timings.stt_endpointing or self._voiced_end > self._settled
        self._speaking = False
        self._settle(time.monotonic(), self._received, words=words, finalize=True)

    def _settle(self, at: float, upto: int, *, words: bool, finalize: bool) -> None:
        start = self._settled / self._bytes_per_second
        duration = (upto - self._settled) / self._bytes_per_second
        self._settled = max(self._settled, upto)
        if duration > 0:
            self._queue(_Due(at + self._owner.timings.stt_final_ms / 1000, start, duration, words, finalize))

    def _queue(self, due: _Due) -> None:
        bisect.insort(self._due, due)
        self._wake.set()

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            if not self._due:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            due = self._due[0]
            await anyio.sleep(max(0.0, due.deadline - time.monotonic()))
            if not self._due or self._due[0] is not due:
                continue  # an earlier message was queued meanwhile
            self._due.pop(0)
            if due.interim:
                if self._finals_out >= due.voiced_end or (due.interim < 0 and due.voiced_end != self._voiced_end):
                    continue  # the final is out, or the caller went on after the pause (a newer interim comes)
                if due.interim > 0 and self._phrase_out >= due.voiced_end:
                    continue  # the phrase's whole words are out: never fewer words after them
                if due.interim < 0:
                    self._phrase_out = due.voiced_end
                words_all = self._owner.peek_transcript().split()
                count = len(words_all) if due.interim < 0 else min(due.interim, len(words_all) - 1)
                if count > 0:
                    start = self._settled / self._bytes_per_second
                    yield _Results(_Channel((_Alternative(" ".join(words_all[:count])),)), start,
                                   self._received / self._bytes_per_second - start, is_final=False,
                                   from_finalize=False)
                continue
            text = self._owner.next_transcript() if due.words else ""
            self._finals_out = max(self._finals_out, round((due.start + due.duration) * self._bytes_per_second))
            yield _Results(_Channel((_Alternative(text),)), due.start, due.duration, from_finalize=due.finalize,
                           speech_final=not due.finalize)


class _SpeakConnection:
    """One scripted ``/v1/speak`` socket: a tone per Speak, first audio ``tts_first_byte_ms`` after a turn starts."""

    def __init__(self, owner: ScriptedDeepgram, params: dict[str, Any]) -> None:
        timings = owner.timings
        self._timings = timings
        rate = int(params.get("sample_rate", 24000))
        chunk = _tone(rate, timings.tts_chunk_ms / 1000)
        self._chunk = lin2ulaw(chunk) if params.get("encoding") == "mulaw" else chunk
        self._pending: list[str] = []  # texts to speak; "" marks a Flush
        self._controls: list[_Control] = []
        self._epoch = 0
        self._wake = anyio.Event()

    async def send_text(self, message: Any) -> None:
        self._pending.append(str(getattr(message, "text", message)))
        self._wake.set()

    async def send_flush(self) -> None:
        self._pending.append("")
        self._wake.set()

    async def send_clear(self) -> None:
        self._epoch += 1
        self._pending.clear()
        self._controls.append(_Control("Cleared"))
        self._wake.set()

    async def __aiter__(self) -> AsyncIterator[Any]:
        timings = self._timings
        chunk_s = timings.tts_chunk_ms / 1000
        speaking = False
        while True:
            while self._controls:
                yield self._controls.pop(0)
            if not self._pending:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            text = self._pending.pop(0)
            epoch = self._epoch
            if not text:
                speaking = False
                yield _Control("Flushed")
                continue
            if not speaking:
                speaking = True
                await anyio.sleep(timings.tts_first_byte_ms / 1000)
            chunks = max(1, math.ceil(len(text) * timings.tts_seconds_per_char / chunk_s - 1e-9))
            for index in range(chunks):
                if index:
                    await anyio.sleep(chunk_s / timings.tts_speed)
                if epoch != self._epoch:
                    break
                yield self._chunk


class _Version:
    def __init__(self, connect: Callable[..., Any]) -> None:
        self.connect = connect


class _Service:
    def __init__(self, connect: Callable[..., Any]) -> None:
        self.v1 = _Version(connect)


class ScriptedDeepgram:
    """An ``AsyncDeepgramClient`` stand-in: ``listen.v1.connect`` and ``speak.v1.connect`` with set timings."""

    def __init__(self, timings: ScriptedTimings | None = None) -> None:
        self.timings = timings or ScriptedTimings()
        self.listen = _Service(self._listen)
        self.speak = _Service(self._speak)
        self.connections = 0
        self._transcript = 0

    def peek_transcript(self) -> str:
        """The scripted caller sentence the next final will carry (what interims hear so far)."""
        texts = self.timings.transcripts
        return texts[self._transcript % len(texts)]

    def next_transcript(self) -> str:
        """The next scripted caller sentence, in turn."""
        texts = self.timings.transcripts
        text = texts[self._transcript % len(texts)]
        self._transcript += 1
        return text

    @asynccontextmanager
    async def _listen(self, **params: Any) -> AsyncIterator[_ListenConnection]:
        self.connections += 1
        yield _ListenConnection(self, params)

    @asynccontextmanager
    async def _speak(self, **params: Any) -> AsyncIterator[_SpeakConnection]:
        self.connections += 1
        yield _SpeakConnection(self, params)


# -- Bedrock -----------------------------------------------------------------------------


class _EventStream:
    """What ``converse_stream`` returns under ``"stream"``: events in time, closable from another thread."""

    def __init__(self, events: Iterator[dict[str, Any]]) -> None:
        self._events = events
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for event in self._events:
            if self._closed.is_set():
                return
            yield event

    def close(self) -> None:
        self._closed.set()


@dataclass
class ScriptedBedrock:
    """A ``bedrock-runtime`` client stand-in whose ``converse_stream`` answers with ``timings.reply``."""

    timings: ScriptedTimings = field(default_factory=ScriptedTimings)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def converse_stream(self, **request: Any) -> dict[str, Any]:
        """Called in a worker thread, like the real client: the stream blocks between events."""
        self.requests.append(request)
        return {"stream": _EventStream(self._events(str(request.get("modelId", "")))), "ResponseMetadata": {}}

    def _events(self, model_id: str) -> Iterator[dict[str, Any]]:
        timings = self.timings
        yield {"messageStart": {"role": "assistant"}}
        time.sleep(timings.llm_first_token_ms / 1000)  # in the reader thread, as a slow socket would block it
        for index, sentence in enumerate(timings.reply):
            if index:
                time.sleep(timings.llm_next_sentence_ms / 1000)
            yield {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": sentence + " "}}}
        yield {"contentBlockStop": {"contentBlockIndex": 0}}
        yield {"messageStop": {"stopReason": "end_turn"}}
        yield {"metadata": {"usage": {"inputTokens": timings.input_tokens, "outputTokens": timings.output_tokens},
                            "metrics": {"latencyMs": round(timings.llm_first_token_ms)}}}


def scripted_settings(**overrides: Any) -> Settings:
    """Settings for the production stack (Deepgram, Bedrock, Aura) on scripted providers: no keys, no probes.

    The turn ends after the fixed silence window (``end_of_turn="silence"``, unless ``AYBIZA_END_OF_TURN``
    names a profile): the latency and capacity benchmarks time our stages on synthetic audio;
    ``benchmarks/endpoint.py`` measures the end-of-turn model.
    """
    values: dict[str, Any] = {"stt": "deepgram", "llm": "bedrock", "tts": "deepgram", "health_probes": False,
                              "deepgram_api_key": "scripted", **overrides}
    settings = Settings(**values)
    if "end_of_turn" in settings.model_fields_set:  # named by the caller or the environment
        return settings
    return settings.model_copy(update={"end_of_turn": "silence"})


def scripted_engines(settings: Settings, timings: ScriptedTimings | None = None) -> Engines:
    """The process's engines with the scripted Deepgram and Bedrock in place of the SDK clients."""
    timings = timings or ScriptedTimings()
    bedrock = ScriptedBedrock(timings)
    return Engines(settings, deepgram_client=ScriptedDeepgram(timings),
                   bedrock_client=lambda region, endpoint, read_timeout: bedrock)


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


def bench_agent() -> AgentConfig:
    """A minimal agent for scripted calls (id ``default``; answers never cached)."""
    return AgentConfig(id="default", name="Bench", greeting="Hello, thanks for calling. How can I help?",
                       system_prompt="A benchmark agent.", fallback="Sorry, I did not catch that.",
                       cache_answers=False)


# -- instruments --------------------------------------------------------------------------


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
    """A benchmark's first stage: counts inbound frames and measures how late the chain handles each.

    A frame's lateness is the time its handling by the whole synchronous chain
    finished, minus when it was due on a real-time schedule anchored at the
    call's most punctual frame so far (what a jitter buffer would need).
    """

    __slots__ = ("on_lateness", "on_frame", "clock", "_audio_s", "_anchor")

    name = "frame-clock"

    def __init__(self, on_lateness: Callable[[float], None] | None = None,
                 on_frame: Callable[[], None] | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.on_lateness = on_lateness
        self.on_frame = on_frame
        self.clock = clock
        self._audio_s = 0.0
        self._anchor = math.inf

    async def process(self, frame: Frame) -> None:
        """Forward; measure lateness once the chain has handled the frame."""
        if type(frame) is not InputAudio:
            await self.push(frame)
            return
        if self.on_frame is not None:
            self.on_frame()
        await self.push(frame)
        offset = self.clock() - self._audio_s
        self._audio_s += frame.duration
        if offset < self._anchor:
            self._anchor = offset
        if self.on_lateness is not None:
            self.on_lateness(offset - self._anchor)
