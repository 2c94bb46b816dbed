"""Embedded streaming speech-to-text with pocketsphinx 5 (en-us model shipped in the package).

The lightest recogniser: it decodes audio as it arrives, so partial
transcripts appear while the caller is still talking and the final one
only waits for the decoder's finishing pass (~0.1 s for a short sentence). A decoder holds about
90 MB of language model, so decoders live in a pool the process's engines own and are
lent to an utterance only while the caller speaks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import numpy as np
import soxr
from anyio.abc import TaskGroup

from ...pipeline.context import CallContext
from ...pipeline.frames import Frame, InputAudio, SpeechStarted, SpeechStopped, Transcript
from ...pipeline.ledger import Stage
from ...pipeline.processor import Processor
from ...pipeline.worker import Worker
from .utterance import MODEL_RATE, UtteranceBuffer

__all__ = ["SphinxRecognizer", "SphinxPool", "SphinxSTT"]

T = TypeVar("T")


class SphinxRecognizer:
    """One pocketsphinx decoder (default en-us config, 16 kHz), fed one utterance in pieces.

    Not thread-safe: one thread uses it at a time. Input at another rate is
    resampled with a streaming soxr resampler (continuous across pieces).
    Cepstral mean normalisation adapts to the speaker and line; ``begin`` sets
    it (the caller's from an earlier utterance, or the model's initial one) so a
    pooled decoder carries nothing over from another call.
    """

    __slots__ = ("_decoder", "_resampler", "_in_utterance", "_initial_cmn")

    def __init__(self, **config: Any) -> None:
        import pocketsphinx  # loads a C extension; deferred to first use

        config.setdefault("loglevel", "FATAL")
        self._decoder = pocketsphinx.Decoder(**config)
        self._initial_cmn: str = self._decoder.get_cmn()
        self._resampler: soxr.ResampleStream | None = None
        self._in_utterance = False

    @property
    def cmn(self) -> str:
        """The current cepstral mean (pocketsphinx's comma-separated form)."""
        return str(self._decoder.get_cmn())

    def begin(self, sample_rate: int, cmn: str | None = None) -> None:
        """Start an utterance of PCM16 mono at ``sample_rate`` (abandons any unfinished one).

        ``cmn`` is a cepstral mean from an earlier utterance of the same caller;
        ``None`` starts from the model's initial one.
        """
        if self._in_utterance:
            self._decoder.end_utt()
        self._decoder.set_cmn(cmn if cmn is not None else self._initial_cmn)
        self._resampler = None
        if sample_rate != MODEL_RATE:
            self._resampler = soxr.ResampleStream(sample_rate, MODEL_RATE, 1, dtype="int16")
        self._decoder.start_utt()
        self._in_utterance = True

    def feed(self, pcm16: bytes) -> str:
        """Decode the next piece of the utterance; return the hypothesis so far."""
        samples = np.frombuffer(pcm16, dtype=np.int16)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        if samples.size:
            self._decoder.process_raw(samples.tobytes(), False, False)
        return self._hypothesis()

    def end(self) -> str:
        """Finish the utterance; return the final hypothesis."""
        if not self._in_utterance:
            return ""
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            if tail.size:
                self._decoder.process_raw(tail.tobytes(), False, False)
            self._resampler = None
        self._decoder.end_utt()
        self._in_utterance = False
        return self._hypothesis()

    def transcribe(self, pcm16: bytes, sample_rate: int) -> str:
        """Text of a whole utterance at once (blocking)."""
        self.begin(sample_rate)
        self.feed(pcm16)
        return self.end()

    def _hypothesis(self) -> str:
        hypothesis = self._decoder.hyp()
        return str(hypothesis.hypstr).strip() if hypothesis is not None else ""


class SphinxPool:
    """Idle decoders shared by the calls of a process; a new one is built only when none is idle.

    ``config`` is passed to every ``pocketsphinx.Decoder`` it builds (default:
    the package's en-us model; e.g. ``{"fwdflat": False}`` trades a little
    accuracy for a faster final).
    """

    __slots__ = ("max_idle", "config", "_idle", "_lock")

    def __init__(self, max_idle: int = 2, config: Mapping[str, Any] | None = None) -> None:
        self.max_idle = max_idle
        self.config = dict(config or {})
        self._idle: list[SphinxRecognizer] = []
        self._lock = threading.Lock()

    def acquire(self) -> SphinxRecognizer:
        """An idle decoder, or a new one (blocking: building one takes ~0.3 s)."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return SphinxRecognizer(**self.config)

    def release(self, recognizer: SphinxRecognizer) -> None:
        """Give a decoder back; beyond ``max_idle`` idle decoders it is freed."""
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(recognizer)

    def warm(self, count: int = 1) -> None:
        """Build decoders until ``count`` are idle (blocking)."""
        while True:
            with self._lock:
                if len(self._idle) >= min(count, self.max_idle):
                    return
            self.release(SphinxRecognizer(**self.config))

    @property
    def idle(self) -> int:
        """Decoders waiting to be lent."""
        return len(self._idle)




@dataclass(frozen=True, slots=True)
class _Audio:
    pcm: bytes
    sample_rate: int


@dataclass(frozen=True, slots=True)
class _End:
    seconds: float
    ended_at: float | None  # None: cut at the length cap while the caller kept talking


class SphinxSTT(Processor):
    """Streaming STT stage: interim transcripts while the caller speaks, a final one at speech stop.

    Consumes ``InputAudio``; forwards every other frame unchanged. Audio of an
    utterance goes to the decoder in ``chunk_seconds`` pieces from a worker
    task (decoding runs in threads); a changed hypothesis is pushed as
    ``Transcript(final=False)`` at most every ``partial_interval`` seconds.
    """

    __slots__ = (
        "pool",
        "limiter",
        "partial_interval",
        "chunk_seconds",
        "_buffer",
        "_worker",
        "_recognizer",
        "_last_partial",
        "_last_partial_at",
        "_cmn",
    )

    name = "stt.sphinx"
    consumes = frozenset({InputAudio, SpeechStarted, SpeechStopped})
    produces = frozenset({Transcript})

    def __init__(
        self,
        pool: SphinxPool | None = None,
        *,
        limiter: anyio.CapacityLimiter | None = None,
        partial_interval: float = 0.2,
        chunk_seconds: float = 0.1,
        max_utterance_seconds: float = 30.0,
        max_pending_chunks: int = 64,
    ) -> None:
        super().__init__()
        self.pool = pool if pool is not None else SphinxPool()
        self.limiter = limiter if limiter is not None else anyio.CapacityLimiter(2)
        self.partial_interval = partial_interval
        self.chunk_seconds = chunk_seconds
        self._buffer = UtteranceBuffer(max_utterance_seconds)
        self._worker: Worker[_Audio | _End] = Worker(self._decode, maxsize=max_pending_chunks)
        self._recognizer: SphinxRecognizer | None = None
        self._last_partial = ""
        self._last_partial_at = -float("inf")
        self._cmn: str | None = None  # this caller's cepstral mean, kept across utterances

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Start the decoding task and make sure the pool has a decoder ready."""
        await super().start(ctx, tg)
        tg.start_soon(self._in_thread, self.pool.warm, name=f"{self.name}.warm")
        self._worker.start(tg, name=self.name)

    async def stop(self) -> None:
        """Give the decoder back to the pool and close the queue."""
        if self._recognizer is not None:
            self.pool.release(self._recognizer)
            self._recognizer = None
        await self._worker.close()

    async def process(self, frame: Frame) -> None:
        """Queue caller audio of an utterance in small pieces; end the utterance when speech stops."""
        if isinstance(frame, InputAudio):
            self._buffer.add(frame)
            if self._buffer.full:
                await self._end_utterance(ended_at=None)
                self._buffer.start()
            elif self._buffer.pending_seconds >= self.chunk_seconds:
                await self._worker.put(_Audio(self._buffer.take(), self._buffer.sample_rate))
            return
        if isinstance(frame, SpeechStarted):
            if not self._buffer.collecting:
                self._buffer.start()
        elif isinstance(frame, SpeechStopped):
            if self._buffer.collecting:
                await self._end_utterance(ended_at=frame.at)
                self._buffer.stop()
        await self.push(frame)

    async def _end_utterance(self, ended_at: float | None) -> None:
        if self._buffer.pending_seconds:
            await self._worker.put(_Audio(self._buffer.take(), self._buffer.sample_rate))
        await self._worker.put(_End(self._buffer.utterance_seconds, ended_at))

    async def _in_thread(self, func: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(
            func, *args, abandon_on_cancel=True, limiter=self.limiter
        )

    async def _decode(self, item: _Audio | _End) -> None:
        ctx = self.ctx
        assert ctx is not None, "SphinxSTT used before start()"
        try:
            if isinstance(item, _Audio):
                await self._feed(ctx, item)
            else:
                await self._finish(ctx, item)
        except BaseException:
            # A cancelled thread may still be inside the decoder: never lend it again.
            self._recognizer = None
            raise

    async def _feed(self, ctx: CallContext, item: _Audio) -> None:
        if self._recognizer is None:
            self._recognizer = await self._in_thread(self.pool.acquire)
            await self._in_thread(self._recognizer.begin, item.sample_rate, self._cmn)
            self._last_partial = ""
            self._last_partial_at = -float("inf")
        hypothesis = await self._in_thread(self._recognizer.feed, item.pcm)
        now = time.monotonic()
        changed = bool(hypothesis) and hypothesis != self._last_partial
        if changed and now - self._last_partial_at >= self.partial_interval:
            self._last_partial = hypothesis
            self._last_partial_at = now
            await self.push(Transcript(hypothesis, final=False, language=ctx.language))

    async def _finish(self, ctx: CallContext, item: _End) -> None:
        recognizer, self._recognizer = self._recognizer, None
        if recognizer is None:
            return
        # If this is cancelled the decoder stays with the abandoned thread and is not lent again.
        text = await self._in_thread(recognizer.end)
        self._cmn = recognizer.cmn
        self.pool.release(recognizer)
        ctx.ledger.add_stt("sphinx", item.seconds)
        if not text:
            ctx.log.debug("stt.sphinx: no words in a %.2f s utterance", item.seconds)
            return
        if item.ended_at is not None:
            ctx.ledger.time(Stage.STT_FINAL, time.monotonic() - item.ended_at)
        await self.push(Transcript(text, final=True, language=ctx.language, speech_ended_at=item.ended_at))
