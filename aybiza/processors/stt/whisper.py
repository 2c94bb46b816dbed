"""Embedded speech-to-text with faster-whisper (tiny.en by default), one utterance at a time.

The model comes from an installed package and is checked against its pinned
upstream hashes before loading (or from a directory the user chose). It is
loaded once per process and shared by every call; inference runs in worker
threads, one at a time per process, so a busy machine queues utterances
instead of oversubscribing its cores.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from anyio.abc import TaskGroup

from ...codecs import resample_samples
from ...errors import ConfigError
from ...pipeline.context import CallContext
from ...pipeline.frames import Frame, InputAudio, SpeechStarted, SpeechStopped, Transcript
from ...pipeline.processor import Processor
from ...pipeline.worker import Worker
from ..packaged import WHISPER_TINY_EN, PackagedModel, verified_dir
from .utterance import MODEL_RATE, UtteranceBuffer, shared_limiter

__all__ = ["WhisperRecognizer", "WhisperSTT", "INFERENCE_SLOTS"]

INFERENCE_SLOTS = 1
"""Whisper inferences that may run at once in this process (each uses ``cpu_threads`` cores)."""

_models: dict[tuple[Path, int], Any] = {}
_models_lock = threading.Lock()
# Held by the thread that runs an inference: an inference abandoned by a
# cancelled call keeps its slot until it really finishes.
_inference_slots = threading.BoundedSemaphore(INFERENCE_SLOTS)


def _load_model(directory: Path, cpu_threads: int) -> Any:
    """The process-wide model for ``directory`` (loaded on first use)."""
    key = (directory.resolve(), cpu_threads)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            from faster_whisper import WhisperModel  # heavy import, deferred to first use

            try:
                model = WhisperModel(str(key[0]), device="cpu", compute_type="int8", cpu_threads=cpu_threads)
            except (RuntimeError, ValueError, OSError) as exc:
                raise ConfigError(f"cannot load the whisper model in {key[0]}: {exc}") from exc
            _models[key] = model
        return model


class WhisperRecognizer:
    """Transcribes whole utterances with faster-whisper (int8 on CPU).

    With no ``model_dir`` the packaged tiny.en model is used, after its files
    are checked against the pinned hashes; a ``model_dir`` the user gives is
    loaded as is. Loading is lazy and shared by every recogniser of the process.
    """

    __slots__ = ("model_dir", "packaged", "cpu_threads", "beam_size", "language")

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        cpu_threads: int = 1,
        beam_size: int = 1,
        language: str = "en",
        packaged: PackagedModel = WHISPER_TINY_EN,
    ) -> None:
        if cpu_threads < 1 or beam_size < 1:
            raise ValueError("cpu_threads and beam_size must be at least 1")
        self.model_dir = model_dir
        self.packaged = packaged
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self.language = language

    def directory(self) -> Path:
        """The model directory: the user's, or the packaged one once its hashes check out."""
        if self.model_dir is None:
            return verified_dir(self.packaged)
        if not (self.model_dir / "model.bin").is_file():
            raise ConfigError(f"{self.model_dir} is not a faster-whisper model directory (no model.bin)")
        return self.model_dir

    def load(self) -> None:
        """Verify and load the model now (blocking); raises ``ModelIntegrityError``/``ConfigError``."""
        _load_model(self.directory(), self.cpu_threads)

    def transcribe(self, pcm16: bytes, sample_rate: int) -> str:
        """Text of one utterance of PCM16 mono audio (blocking; call from a thread)."""
        model = _load_model(self.directory(), self.cpu_threads)
        audio = resample_samples(pcm16, sample_rate, MODEL_RATE).astype(np.float32) / 32768.0
        if audio.size == 0:
            return ""
        with _inference_slots:
            segments, _info = model.transcribe(
                audio,
                language=self.language,
                beam_size=self.beam_size,
                vad_filter=False,
                condition_on_previous_text=False,
                without_timestamps=True,
            )
            # Decoding happens while the segments are iterated: keep it inside the slot.
            text = " ".join(segment.text.strip() for segment in segments)
        return text.strip()

    async def transcribe_async(self, pcm16: bytes, sample_rate: int) -> str:
        """``transcribe`` in a worker thread, queued behind the process's other inferences."""
        return await anyio.to_thread.run_sync(
            self.transcribe,
            pcm16,
            sample_rate,
            abandon_on_cancel=True,
            limiter=shared_limiter("whisper", INFERENCE_SLOTS),
        )


@dataclass(frozen=True, slots=True)
class _Utterance:
    pcm: bytes
    sample_rate: int
    seconds: float
    ended_at: float | None  # None: cut at the length cap while the caller kept talking


class WhisperSTT(Processor):
    """Utterance STT stage: collects caller audio from speech start to stop, then transcribes it.

    Consumes ``InputAudio``; forwards every other frame unchanged and pushes a
    final ``Transcript`` per utterance once whisper is done. An ``Interruption``
    does not drop the utterance in progress: the barge-in is the caller's next turn.
    An utterance longer than ``max_utterance_seconds`` is transcribed in pieces
    (a piece cut while the caller is still talking has ``speech_ended_at=None``).
    """

    __slots__ = ("recognizer", "min_utterance_seconds", "_buffer", "_worker")

    name = "stt.whisper"

    def __init__(
        self,
        recognizer: WhisperRecognizer | None = None,
        *,
        max_utterance_seconds: float = 30.0,
        min_utterance_seconds: float = 0.1,
        max_pending_utterances: int = 8,
    ) -> None:
        super().__init__()
        self.recognizer = recognizer if recognizer is not None else WhisperRecognizer()
        self.min_utterance_seconds = min_utterance_seconds
        self._buffer = UtteranceBuffer(max_utterance_seconds)
        self._worker: Worker[_Utterance] = Worker(self._transcribe, maxsize=max_pending_utterances)

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Start the transcription task; load the model in the background if not loaded yet."""
        await super().start(ctx, tg)
        tg.start_soon(self._load, name=f"{self.name}.load")
        self._worker.start(tg, name=self.name)

    async def stop(self) -> None:
        """Close the transcription queue."""
        await self._worker.close()

    async def process(self, frame: Frame) -> None:
        """Buffer caller audio of an utterance; queue it for transcription when speech stops."""
        if isinstance(frame, InputAudio):
            self._buffer.add(frame)
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

    async def _submit(self, ended_at: float | None) -> None:
        seconds = self._buffer.utterance_seconds
        sample_rate = self._buffer.sample_rate
        pcm = self._buffer.take()
        if seconds < self.min_utterance_seconds:
            if self.ctx is not None:
                self.ctx.log.debug("stt.whisper: ignoring a %.3f s utterance", seconds)
            return
        await self._worker.put(_Utterance(pcm, sample_rate, seconds, ended_at))

    async def _load(self) -> None:
        await anyio.to_thread.run_sync(self.recognizer.load, abandon_on_cancel=True)

    async def _transcribe(self, utterance: _Utterance) -> None:
        ctx = self.ctx
        assert ctx is not None, "WhisperSTT used before start()"
        text = await self.recognizer.transcribe_async(utterance.pcm, utterance.sample_rate)
        ctx.add_usage("stt_seconds", utterance.seconds)
        if not text:
            ctx.log.debug("stt.whisper: no words in a %.2f s utterance", utterance.seconds)
            return
        if utterance.ended_at is not None:
            ctx.record_timing("stt_final", time.monotonic() - utterance.ended_at)
        await self.push(
            Transcript(text, final=True, language=ctx.language, speech_ended_at=utterance.ended_at)
        )
