"""Embedded speech-to-text with faster-whisper, one utterance at a time, in the call's language.

English goes to the fastest English model (tiny.en by default); other
languages go to a multilingual model (whisper base by default) with the
language forced, never guessed. The models come from installed packages and
are checked against their pinned upstream hashes before loading (or from a
directory the user chose). The process's engines own one recogniser per
model and share it with every call; inference runs in worker threads, one at
a time per process (``slots``), so a busy machine queues utterances instead
of oversubscribing its cores.

The stage follows the call's language: a ``LanguageChanged`` steered up the
control path by the language stage switches the recogniser for the next
utterance. Before that can happen, the first utterance long enough to tell
(``identify``) goes through audio language identification on the
multilingual model: an English recogniser turns Spanish into English words
("Okay, I'm in Los Alamos") that no text language ID can catch, so when
another of ``languages`` is clearly spoken the utterance is transcribed in it
and its transcript says so (the language stage decides what follows). Language
ID runs beside the recognition in the call's language (on its own slot), not
before it: when it hears the call's language, as it mostly does, the text is
ready with it; otherwise the utterance is transcribed again in the language heard.

**Early, on a pause.** The end of turn is confirmed some time after the
caller's pause begins (the VAD's silence, then the end-of-turn model), and
only then does a ``SpeechStopped`` reach this stage. With ``early_s`` and
``caller_quiet_s`` (the VAD's :attr:`~aybiza.processors.vad.VADProcessor.silent_s`)
the stage starts transcribing (language ID included) as soon as the caller has
been quiet ``early_s``, on the audio so far; if the turn ends with no voice
heard since, that result is the utterance's and the final is out at once
instead of a whisper run later. Voice after the pause discards it (the
audio is transcribed again at the end); what it cost is a whisper run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from anyio.abc import TaskGroup

from ...codecs import resample_samples
from ...errors import ConfigError
from ...pipeline import (
    CallContext,
    Frame,
    HeardSoFar,
    InputAudio,
    LanguageChanged,
    Processor,
    SpeechStarted,
    SpeechStopped,
    Stage,
    Transcript,
    Worker,
)
from ..packaged import WHISPER_TINY_EN, PackagedModel, verified_dir
from .utterance import MODEL_RATE, UtteranceBuffer

__all__ = ["WhisperRecognizer", "WhisperSTT", "RecognizerFor", "primary_language"]


def primary_language(tag: str) -> str:
    """``es-MX`` -> ``es``."""
    return tag.replace("_", "-").split("-", 1)[0].lower() or "en"


class WhisperRecognizer:
    """Transcribes whole utterances with one faster-whisper model (int8 on CPU).

    With no ``model_dir`` the ``packaged`` model is used, after its files are
    checked against the pinned hashes; a ``model_dir`` the user gives is
    loaded as is. ``language`` is forced on every utterance unless the model
    is English-only. ``slots`` bounds the inferences running at once (shared
    by every recogniser of a process) and ``limiter`` the threads waiting for
    one.
    """

    __slots__ = ("model_dir", "packaged", "cpu_threads", "beam_size", "multilingual", "slots", "limiter",
                 "lid_slots", "lid_limiter", "_model", "_lock")

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        cpu_threads: int = 1,
        beam_size: int = 1,
        packaged: PackagedModel = WHISPER_TINY_EN,
        multilingual: bool = False,
        slots: threading.Semaphore | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        lid_slots: threading.Semaphore | None = None,
        lid_limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        if cpu_threads < 1 or beam_size < 1:
            raise ValueError("cpu_threads and beam_size must be at least 1")
        self.model_dir = model_dir
        self.packaged = packaged
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self.multilingual = multilingual
        self.slots = slots if slots is not None else threading.BoundedSemaphore(1)
        self.limiter = limiter if limiter is not None else anyio.CapacityLimiter(1)
        # Language ID's own slot (none: the recognition's): it can run beside a first utterance's recognition.
        self.lid_slots = lid_slots
        self.lid_limiter = lid_limiter
        self._model: Any = None
        self._lock = threading.Lock()

    def directory(self) -> Path:
        """The model directory: the user's, or the packaged one once its hashes check out."""
        if self.model_dir is None:
            return verified_dir(self.packaged)
        if not (self.model_dir / "model.bin").is_file():
            raise ConfigError(f"{self.model_dir} is not a faster-whisper model directory (no model.bin)")
        return self.model_dir

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._model is not None

    def load(self) -> Any:
        """Verify and load the model (blocking, once); raises ``ModelIntegrityError``/``ConfigError``."""
        with self._lock:
            if self._model is None:
                from faster_whisper import WhisperModel  # heavy import, deferred to first use

                directory = self.directory()
                try:
                    self._model = WhisperModel(str(directory), device="cpu", compute_type="int8",
                                               cpu_threads=self.cpu_threads)
                except (RuntimeError, ValueError, OSError) as exc:
                    raise ConfigError(f"cannot load the whisper model in {directory}: {exc}") from exc
            return self._model

    def transcribe(self, pcm16: bytes, sample_rate: int, language: str = "en") -> str:
        """Text of one utterance of PCM16 mono audio (blocking; call from a thread)."""
        model = self.load()
        audio = resample_samples(pcm16, sample_rate, MODEL_RATE).astype(np.float32) / 32768.0
        if audio.size == 0:
            return ""
        with self.slots:
            segments, _info = model.transcribe(
                audio,
                language=primary_language(language) if self.multilingual else "en",
                beam_size=self.beam_size,
                # one greedy pass: whisper's default re-decodes a doubtful segment at rising temperatures, i.e. by
                # sampling, so a noisy line got a different transcript on every try and cost up to six decodes
                temperature=0.0,
                vad_filter=False,
                condition_on_previous_text=False,
                without_timestamps=True,
            )
            # Decoding happens while the segments are iterated: keep it inside the slot.
            text = " ".join(segment.text.strip() for segment in segments)
        return text.strip()

    def detect_language(self, pcm16: bytes, sample_rate: int, candidates: frozenset[str]) -> tuple[str, float]:
        """The most likely of ``candidates`` (primary tags) spoken in the audio, and its probability among them.

        Needs a multilingual model (blocking; call from a thread). The probabilities of the
        candidates are renormalised over the candidates alone.
        """
        if not self.multilingual:
            raise ConfigError("language identification needs a multilingual whisper model")
        model = self.load()
        audio = resample_samples(pcm16, sample_rate, MODEL_RATE).astype(np.float32) / 32768.0
        with self.lid_slots if self.lid_slots is not None else self.slots:
            _, _, ranked = model.detect_language(audio)
        scores = {code: float(p) for code, p in ranked if code in candidates}
        total = sum(scores.values())
        if not scores or total <= 0.0:
            return "", 0.0
        best = max(scores, key=lambda code: scores[code])
        return best, scores[best] / total

    async def transcribe_async(self, pcm16: bytes, sample_rate: int, language: str = "en") -> str:
        """``transcribe`` in a worker thread, queued behind the process's other inferences."""
        return await anyio.to_thread.run_sync(
            self.transcribe, pcm16, sample_rate, language, abandon_on_cancel=True, limiter=self.limiter
        )


RecognizerFor = Callable[[str], WhisperRecognizer]
"""The recogniser for a language tag (the process's engines decide which model speaks it)."""


@dataclass(frozen=True, slots=True)
class _Utterance:
    pcm: bytes
    sample_rate: int
    seconds: float
    ended_at: float | None  # None: cut at the length cap while the caller kept talking
    language: str
    early: _Early | None = None  # the same speech, transcribed at the pause


@dataclass(slots=True)
class _Early:
    """A transcription started at the caller's pause, before the end of turn reached the stage."""

    language: str
    upto: float | None = None  # capture time of the end of the audio it hears
    done: anyio.Event = field(default_factory=anyio.Event)
    result: tuple[str, str, bool] | None = None  # (language, text, audio language ID spent)


class WhisperSTT(Processor):
    """Utterance STT stage: collects caller audio from speech start to stop, then transcribes it.

    Consumes ``InputAudio``; forwards every other frame unchanged and pushes a
    final ``Transcript`` per utterance once whisper is done. An ``Interruption``
    does not drop the utterance in progress: the barge-in is the caller's next turn.
    An utterance longer than ``max_utterance_seconds`` is transcribed in pieces
    (a piece cut while the caller is still talking has ``speech_ended_at=None``).
    """

    __slots__ = ("recognizer_for", "min_utterance_seconds", "language", "languages", "lid_threshold", "_identify",
                 "_buffer", "_worker", "_tg", "early_s", "caller_quiet_s", "_early")

    name = "stt.whisper"
    consumes = frozenset({InputAudio, SpeechStarted, SpeechStopped, LanguageChanged})
    steers = frozenset({HeardSoFar})
    produces = frozenset({Transcript})

    def __init__(
        self,
        recognizer_for: RecognizerFor | WhisperRecognizer,
        *,
        max_utterance_seconds: float = 30.0,
        min_utterance_seconds: float = 0.1,
        max_pending_utterances: int = 8,
        identify: int = 0,
        languages: frozenset[str] = frozenset(),
        lid_threshold: float = 0.7,
        early_s: float = 0.0,
        caller_quiet_s: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self.early_s = early_s  # 0: transcribe only once the end of turn arrives
        self.caller_quiet_s = caller_quiet_s  # the VAD's silence so far (none: never early)
        self._early: _Early | None = None
        self._identify = identify if len(languages) > 1 else 0
        self.languages = languages
        self.lid_threshold = lid_threshold
        if isinstance(recognizer_for, WhisperRecognizer):
            single = recognizer_for
            recognizer_for = lambda language: single  # noqa: E731 - one model for every language
        self.recognizer_for: RecognizerFor = recognizer_for
        self.min_utterance_seconds = min_utterance_seconds
        self.language = "en"
        self._buffer = UtteranceBuffer(max_utterance_seconds)
        self._worker: Worker[_Utterance] = Worker(self._transcribe, maxsize=max_pending_utterances)
        self._tg: TaskGroup | None = None

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Start the transcription task; load the call's model in the background if not loaded yet."""
        await super().start(ctx, tg)
        self.language = ctx.language
        self._tg = tg
        tg.start_soon(self._load, self.language, name=f"{self.name}.load")
        self._worker.start(tg, name=self.name)

    async def stop(self) -> None:
        """Close the transcription queue."""
        await self._worker.close()

    async def control(self, frame: Frame) -> None:
        """Switch the language of the next utterances (the language stage steers it)."""
        if isinstance(frame, LanguageChanged) and frame.language != self.language:
            if self.ctx is not None:
                self.ctx.log.info("stt.whisper: language %s -> %s", self.language, frame.language)
            self.language = frame.language
            if self._tg is not None and not self.recognizer_for(frame.language).loaded:
                self._tg.start_soon(self._load, frame.language, name=f"{self.name}.load")
        await self.steer(frame)

    async def process(self, frame: Frame) -> None:
        """Buffer caller audio of an utterance; queue it for transcription when speech stops."""
        if isinstance(frame, InputAudio):
            self._buffer.add(frame)
            if self.early_s > 0 and self.caller_quiet_s is not None and self._buffer.collecting:
                self._maybe_early(self.caller_quiet_s(), frame.captured_at + frame.duration)
            if self._buffer.full:
                await self._submit(ended_at=None)
                self._buffer.start()
            return
        if isinstance(frame, SpeechStarted):
            if not self._buffer.collecting:
                self._buffer.start()
        elif isinstance(frame, SpeechStopped):
            if self._buffer.collecting:
                await self._submit(ended_at=frame.at)
                self._buffer.stop()
        await self.push(frame)

    def _maybe_early(self, quiet_s: float, upto: float) -> None:
        """Voice discards an early transcription; a long enough pause starts one on the audio so far."""
        if quiet_s < 1e-6:
            self._early = None  # this frame was voice: the speech goes on
        elif (quiet_s >= self.early_s and self._early is None and self._tg is not None
              and self._buffer.utterance_seconds >= self.min_utterance_seconds):
            early = self._early = _Early(self.language, upto)
            utterance = _Utterance(self._buffer.peek(), self._buffer.sample_rate, self._buffer.utterance_seconds,
                                   None, self.language)
            self._tg.start_soon(self._recognise_early, early, utterance, name=f"{self.name}.early")

    async def _recognise_early(self, early: _Early, utterance: _Utterance) -> None:
        try:
            early.result = await self._recognise(utterance)
        finally:
            early.done.set()
        if self._early is early and early.result is not None:  # still quiet: the end of turn reads the words
            language, text, _ = early.result
            await self.steer(HeardSoFar(text, language, early.upto))

    async def _recognise(self, utterance: _Utterance) -> tuple[str, str, bool]:
        """(language, text, whether language ID ran). Language ID runs beside the recognition in the call's
        language, not before it: when it hears that language (the usual case) the text is ready with it."""
        if self._identify <= 0 or utterance.seconds < 0.8:
            text = await self.recognizer_for(utterance.language).transcribe_async(
                utterance.pcm, utterance.sample_rate, utterance.language)
            return utterance.language, text, False
        found: dict[str, Any] = {}

        async def identify() -> None:
            found["language"] = await self._identified(utterance)

        async def recognise() -> None:
            found["text"] = await self.recognizer_for(utterance.language).transcribe_async(
                utterance.pcm, utterance.sample_rate, utterance.language)

        async with anyio.create_task_group() as tg:
            tg.start_soon(identify)
            tg.start_soon(recognise)
        language, spent = found["language"]
        if language == utterance.language:
            return language, str(found["text"]), spent
        text = await self.recognizer_for(language).transcribe_async(utterance.pcm, utterance.sample_rate, language)
        return language, text, spent

    async def _submit(self, ended_at: float | None) -> None:
        seconds = self._buffer.utterance_seconds
        sample_rate = self._buffer.sample_rate
        early, self._early = self._early, None
        pcm = self._buffer.take()
        if seconds < self.min_utterance_seconds:
            if self.ctx is not None:
                self.ctx.log.debug("stt.whisper: ignoring a %.3f s utterance", seconds)
            return
        if early is not None and (ended_at is None or early.language != self.language):
            early = None  # a piece cut while the caller talks, or the language changed since the pause
        await self._worker.put(_Utterance(pcm, sample_rate, seconds, ended_at, self.language, early))

    async def _load(self, language: str) -> None:
        await anyio.to_thread.run_sync(self.recognizer_for(language).load, abandon_on_cancel=True)

    async def _transcribe(self, utterance: _Utterance) -> None:
        ctx = self.ctx
        assert ctx is not None, "WhisperSTT used before start()"
        result: tuple[str, str, bool] | None = None
        if utterance.early is not None:
            await utterance.early.done.wait()
            result = utterance.early.result
        if result is None:
            result = await self._recognise(utterance)
        language, text, spent = result
        if spent:
            self._identify -= 1
        ctx.ledger.add_stt("whisper", utterance.seconds)
        if not text:
            ctx.log.debug("stt.whisper: no words in a %.2f s utterance", utterance.seconds)
            return
        if utterance.ended_at is not None:
            ctx.ledger.time(Stage.STT_FINAL, time.monotonic() - utterance.ended_at)
        await self.push(Transcript(text, final=True, language=language, speech_ended_at=utterance.ended_at))

    async def _identified(self, utterance: _Utterance) -> tuple[str, bool]:
        """The utterance's language (the call's, unless audio language ID clearly hears another), and whether
        language ID ran (the caller spends one of ``identify`` on it once used: an early run may be dropped)."""
        if self._identify <= 0 or utterance.seconds < 0.8:
            return utterance.language, False
        current = primary_language(utterance.language)
        multilingual = self.recognizer_for(next(code for code in sorted(self.languages) if code != "en"))
        language, probability = await anyio.to_thread.run_sync(
            multilingual.detect_language, utterance.pcm, utterance.sample_rate, self.languages,
            abandon_on_cancel=True, limiter=multilingual.lid_limiter or multilingual.limiter)
        if self.ctx is not None:
            self.ctx.log.info("stt.whisper: audio language ID %s (%.2f), call language %s", language or "-",
                              probability, utterance.language)
        if language and language != current and probability >= self.lid_threshold:
            return language, True
        return utterance.language, True
