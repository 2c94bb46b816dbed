"""Voice activity detection and silence gating, inline on every caller frame.

A frame classifier says voiced or not for each 10/20/30 ms frame (other
sizes are cut into 20 ms chunks): by default webrtcvad behind an adaptive
noise-floor gate (``detector="adaptive"``), or plain webrtcvad, or Silero
VAD (ONNX, model from the ``silero-vad`` package). A small state machine
smooths the verdicts into speech segments:

* ``start_ms`` of consecutive voiced audio (``barge_in_start_ms`` while the
  caller hears the agent, as the output steers with :class:`AgentSpeaking`,
  so a click or a cough is not a barge-in) confirms speech: ``SpeechStarted``
  (at the first voiced frame's capture time) is pushed, then the held
  pre-roll (up to ``preroll_ms`` before that frame) so the first syllable is
  never clipped, then every frame while in speech;
* ``stop_ms`` of consecutive non-voiced audio ends it: ``SpeechStopped`` (at
  the end of the last voiced frame), optionally followed by ``hangover_ms``
  more audio for recognisers that like a tail.

With ``gate=True`` audio outside speech is not forwarded (a paid STT would
bill it) and the call's usage records ``audio_seconds`` for every frame and
``gated_seconds`` for the frames held back. Forwarded frames carry
``voiced=True`` inside a speech segment (pre-roll and hangover included) and
``voiced=False`` outside it (``gate=False`` only).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread
import numpy as np
import numpy.typing as npt
import webrtcvad
from anyio.abc import TaskGroup

from ..pipeline.context import CallContext
from ..pipeline.frames import AgentSpeaking, EndOfCall, Frame, InputAudio, SpeechStarted, SpeechStopped
from ..pipeline.processor import Processor
from .levels import mean_square
from .packaged import PackagedModel, verified_dir

__all__ = [
    "AdaptiveClassifier",
    "Detector",
    "FrameClassifier",
    "SILERO_VAD",
    "SileroClassifier",
    "VADProcessor",
    "VAD_SAMPLE_RATES",
    "WebRtcClassifier",
    "make_classifier",
]

VAD_SAMPLE_RATES = frozenset({8000, 16000, 32000, 48000})
"""Sample rates the classifier accepts (webrtcvad's)."""

_NATIVE_FRAME_MS = frozenset({10, 20, 30})
_CHUNK_MS = 20

FrameClassifier = Callable[[bytes, int], bool]
"""``classify(pcm16, sample_rate) -> voiced`` for one 10, 20 or 30 ms frame."""


class WebRtcClassifier:
    """webrtcvad's GMM classifier; ``aggressiveness`` 0 (keeps most) to 3 (strictest)."""

    __slots__ = ("_vad",)

    def __init__(self, aggressiveness: int = 2) -> None:
        if not 0 <= aggressiveness <= 3:
            raise ValueError(f"aggressiveness must be 0..3, not {aggressiveness}")
        self._vad = webrtcvad.Vad(aggressiveness)

    def __call__(self, pcm: bytes, sample_rate: int) -> bool:
        """True when the frame holds speech."""
        return bool(self._vad.is_speech(pcm, sample_rate))


class AdaptiveClassifier:
    """webrtcvad behind an adaptive noise-floor gate, with a short hangover.

    A frame is voiced when webrtcvad says so *and* its level is more than
    ``margin_db`` above the tracked noise floor: that removes webrtcvad's
    false alarms in steady noise and its tail after speech ends. The floor
    is the minimum frame level over the last ``window_s`` seconds, kept as
    block minima so a frame costs O(1). After a voiced frame, up to
    ``hangover_ms`` more audio above the floor stays voiced (weak word
    endings sink into the noise first); ``holding`` tells such frames apart.
    """

    __slots__ = (
        "_vad",
        "_margin_db",
        "_hangover_s",
        "_block_s",
        "_blocks",
        "_block_min",
        "_block_filled_s",
        "_floor_db",
        "_hold_s",
        "holding",
    )

    _SILENT_DB = 24.0  # below ~-66 dBFS nothing is speech (digital or near-digital silence)

    def __init__(
        self,
        aggressiveness: int = 2,
        *,
        margin_db: float = 3.0,
        hangover_ms: int = 200,
        window_s: float = 1.5,
    ) -> None:
        self._vad = WebRtcClassifier(aggressiveness)
        self._margin_db = margin_db
        self._hangover_s = hangover_ms / 1000
        self._block_s = 0.24
        self._blocks: deque[float] = deque(maxlen=max(1, round(window_s / self._block_s)))
        self._block_min = math.inf
        self._block_filled_s = 0.0
        self._floor_db = math.inf
        self._hold_s = 0.0
        self.holding = False
        """True when the latest voiced verdict came from the hangover, not from speech evidence."""

    @property
    def floor_db(self) -> float:
        """The current noise floor estimate, dB re one PCM16 step (inf before any audio)."""
        return min(self._floor_db, self._block_min)

    def __call__(self, pcm: bytes, sample_rate: int) -> bool:
        """True when the frame holds speech above the noise floor (or is in the hangover after it)."""
        level_db = 10.0 * math.log10(mean_square(pcm) + 1.0)  # the quality stage measured it already
        duration = len(pcm) // 2 / sample_rate
        if level_db < self._block_min:
            self._block_min = level_db
        self._block_filled_s += duration
        if self._block_filled_s >= self._block_s - 1e-9:
            self._blocks.append(self._block_min)
            self._floor_db = min(self._blocks)
            self._block_min = math.inf
            self._block_filled_s = 0.0
        floor = min(self._floor_db, self._block_min)
        self.holding = False
        if level_db >= self._SILENT_DB and level_db > floor + self._margin_db and self._vad(pcm, sample_rate):
            self._hold_s = self._hangover_s
            return True
        if self._hold_s > 1e-9 and level_db >= self._SILENT_DB and level_db > floor:
            self._hold_s -= duration
            self.holding = True
            return True
        self._hold_s = 0.0
        return False


# Pinned to the file shipped in the silero-vad 6.2.3 wheel (snakers4/silero-vad v6 ONNX export).
SILERO_VAD = PackagedModel(
    name="Silero VAD v6 ONNX (snakers4/silero-vad)",
    package="silero_vad",
    subdir="data",
    files=(("silero_vad.onnx", "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"),),
)


class SileroClassifier:
    """Silero VAD (ONNX via onnxruntime) on 32 ms windows; a frame takes the latest window's verdict.

    Needs the ``silero-vad`` package for its model file only (install it with
    ``--no-deps``: torch is not used). About 0.2 ms a window, so the processor
    runs it in a worker thread (``offload``).
    """

    offload = True

    def __init__(self, threshold: float = 0.5, model_dir: Path | None = None) -> None:
        import onnxruntime

        directory = model_dir if model_dir is not None else verified_dir(SILERO_VAD)
        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        self._session: Any = onnxruntime.InferenceSession(
            str(directory / "silero_vad.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._threshold = threshold
        self._rate = 0
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(0, dtype=np.float32)
        self._buffer = np.zeros(0, dtype=np.float32)
        self.probability = 0.0
        """Speech probability of the latest window."""

    def __call__(self, pcm: bytes, sample_rate: int) -> bool:
        """True when the latest complete window's speech probability reaches the threshold."""
        samples: npt.NDArray[np.float32] = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        if sample_rate > 16000:
            samples = samples[:: sample_rate // 16000]  # 32/48 kHz -> 16 kHz, as upstream does
            sample_rate = 16000
        if sample_rate != self._rate:
            self._rate = sample_rate
            self._state = np.zeros((2, 1, 128), dtype=np.float32)
            self._context = np.zeros(32 if sample_rate == 8000 else 64, dtype=np.float32)
            self._buffer = np.zeros(0, dtype=np.float32)
        window = 256 if sample_rate == 8000 else 512
        buffer = np.concatenate((self._buffer, samples))
        rate = np.array(sample_rate, dtype=np.int64)
        while buffer.size >= window:
            chunk = np.concatenate((self._context, buffer[:window]))
            out, self._state = self._session.run(None, {"input": chunk[None, :], "state": self._state, "sr": rate})
            self._context = chunk[-self._context.size :]
            buffer = buffer[window:]
            self.probability = float(out[0, 0])
        self._buffer = buffer
        return self.probability >= self._threshold


Detector = Literal["adaptive", "webrtc", "silero"]
"""Which frame classifier a VADProcessor uses."""


def make_classifier(detector: Detector, aggressiveness: int = 2) -> FrameClassifier:
    """Build a frame classifier by name (``adaptive`` is webrtcvad behind a noise-floor gate)."""
    if detector == "adaptive":
        return AdaptiveClassifier(aggressiveness)
    if detector == "webrtc":
        return WebRtcClassifier(aggressiveness)
    if detector == "silero":
        return SileroClassifier()
    raise ValueError(f"unknown VAD detector {detector!r}")


class VADProcessor(Processor):
    """Pushes SpeechStarted/SpeechStopped and gates non-speech audio away from STT."""

    __slots__ = (
        "speaking",
        "_classify",
        "_offload",
        "_start_s",
        "_base_start_s",
        "_barge_in_start_s",
        "_stop_s",
        "_preroll_s",
        "_hangover_s",
        "_gate",
        "_held",
        "_held_s",
        "_voiced_run_s",
        "_voiced_run_start",
        "_silent_run_s",
        "_last_voiced_end",
        "_tail_s",
        "_pending",
        "_pending_rate",
        "_pending_at",
    )

    name = "vad"
    consumes = frozenset({InputAudio, AgentSpeaking})
    produces = frozenset({SpeechStarted, SpeechStopped})

    def __init__(
        self,
        *,
        aggressiveness: int = 2,
        start_ms: int = 60,
        barge_in_start_ms: int = 100,
        stop_ms: int = 400,
        preroll_ms: int = 200,
        hangover_ms: int = 0,
        gate: bool = True,
        detector: Detector = "adaptive",
        classifier: FrameClassifier | None = None,
    ) -> None:
        super().__init__()
        if min(start_ms, barge_in_start_ms, stop_ms, preroll_ms, hangover_ms) < 0:
            raise ValueError("VAD durations must not be negative")
        self._classify: FrameClassifier = classifier or make_classifier(detector, aggressiveness)
        self._offload = bool(getattr(self._classify, "offload", False))
        self._start_s = start_ms / 1000
        self._base_start_s = self._start_s
        self._barge_in_start_s = max(start_ms, barge_in_start_ms) / 1000
        self._stop_s = stop_ms / 1000
        self._preroll_s = preroll_ms / 1000
        self._hangover_s = hangover_ms / 1000
        self._gate = gate
        self.speaking = False
        """True between SpeechStarted and SpeechStopped."""
        # Frames not yet forwarded while not speaking (pre-roll candidates).
        self._held: deque[InputAudio] = deque()
        self._held_s = 0.0
        self._voiced_run_s = 0.0
        self._voiced_run_start = 0.0
        self._silent_run_s = 0.0
        self._last_voiced_end = 0.0
        self._tail_s = 0.0  # hangover audio still to forward after SpeechStopped
        # Rechunking of frames that are not 10/20/30 ms long.
        self._pending = b""
        self._pending_rate = 0
        self._pending_at = 0.0

    @property
    def silent_s(self) -> float:
        """How long the caller has been quiet (inf outside speech): preemptive replies guess only on a pause."""
        return self._silent_run_s if self.speaking else math.inf

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Bind the call (usage counters go to ``ctx``)."""
        await super().start(ctx, tg)

    async def control(self, frame: Frame) -> None:
        """While the caller hears the agent, speech must last ``barge_in_start_ms`` (a click is no barge-in)."""
        if isinstance(frame, AgentSpeaking):
            self._start_s = self._barge_in_start_s if frame.speaking else self._base_start_s
        await self.steer(frame)

    async def process(self, frame: Frame) -> None:
        """Classify caller audio; forward everything else unchanged."""
        if type(frame) is InputAudio:
            rate = frame.sample_rate
            if rate not in VAD_SAMPLE_RATES:
                raise ValueError(f"VAD needs 8/16/32/48 kHz audio, not {rate} Hz")
            frame_ms, odd = divmod(len(frame.pcm) * 500, rate)
            if not self._pending and not odd and frame_ms in _NATIVE_FRAME_MS:
                await self._on_audio(frame)
            else:
                for chunk in self._rechunk(frame):
                    await self._on_audio(chunk)
            return
        if isinstance(frame, EndOfCall):
            await self._finish()
        await self.push(frame)

    async def stop(self) -> None:
        """Account the audio still held back as gated."""
        self._drop_held()

    # -- internals -------------------------------------------------------

    def _rechunk(self, frame: InputAudio) -> list[InputAudio]:
        """Cut odd-sized frames into 20 ms chunks (the remainder waits for the next frame)."""
        rate = frame.sample_rate
        if rate != self._pending_rate:
            self._pending = b""
            self._pending_rate = rate
        if not self._pending:
            self._pending_at = frame.captured_at
        data = self._pending + frame.pcm
        step = rate * _CHUNK_MS // 1000 * 2
        chunks: list[InputAudio] = []
        at = self._pending_at
        offset = 0
        while len(data) - offset >= step:
            chunks.append(InputAudio(data[offset : offset + step], rate, at))
            offset += step
            at += _CHUNK_MS / 1000
        self._pending = data[offset:]
        self._pending_at = at
        return chunks

    async def _on_audio(self, frame: InputAudio) -> None:
        duration = len(frame.pcm) / (2 * frame.sample_rate)
        ctx = self.ctx
        if ctx is not None:
            ctx.ledger.add_audio(duration)
        if self._offload:
            voiced = await anyio.to_thread.run_sync(self._classify, frame.pcm, frame.sample_rate)
        else:
            voiced = self._classify(frame.pcm, frame.sample_rate)
        # A classifier's own hangover keeps a frame "voiced" without new evidence of speech:
        # it must neither start speech nor move its end.
        voiced = voiced and not getattr(self._classify, "holding", False)
        if self.speaking:
            # the pause is counted before the frame goes on: the stages after see this frame's silence with it
            if voiced:
                self._silent_run_s = 0.0
                self._last_voiced_end = frame.captured_at + duration
            else:
                self._silent_run_s += duration
            await self.push(InputAudio(frame.pcm, frame.sample_rate, frame.captured_at, True, frame.ulaw))
            if voiced:
                return
            if self._silent_run_s >= self._stop_s - 1e-9:
                self.speaking = False
                self._voiced_run_s = 0.0
                self._tail_s = self._hangover_s
                await self.push(SpeechStopped(at=self._last_voiced_end))
            return
        if voiced:
            if self._voiced_run_s == 0.0:
                self._voiced_run_start = frame.captured_at
            self._voiced_run_s += duration
        else:
            self._voiced_run_s = 0.0
        if self._voiced_run_s > 0.0 and self._voiced_run_s >= self._start_s - 1e-9:
            await self._begin_speech(frame, duration)
            return
        if self._tail_s > 0.0:
            # Hangover after SpeechStopped: forward, still marked as part of the segment.
            self._tail_s -= duration
            await self.push(InputAudio(frame.pcm, frame.sample_rate, frame.captured_at, True, frame.ulaw))
            return
        if not self._gate:
            await self.push(InputAudio(frame.pcm, frame.sample_rate, frame.captured_at, False, frame.ulaw))
            return
        self._held.append(frame)
        self._held_s += duration
        self._trim_held()

    async def _begin_speech(self, frame: InputAudio, duration: float) -> None:
        self.speaking = True
        self._silent_run_s = 0.0
        self._tail_s = 0.0
        self._last_voiced_end = frame.captured_at + duration
        await self.push(SpeechStarted(at=self._voiced_run_start))
        # The voiced run so far and ``preroll_ms`` before it, counted in audio, not arrival times: frames that
        # arrive in a burst (network jitter) must not shorten the pre-roll, nor a late one lengthen it.
        keep_s = self._preroll_s + self._voiced_run_s - duration + 1e-6
        held, kept_s = self._held, 0.0
        first = len(held)
        while first > 0 and kept_s + held[first - 1].duration <= keep_s:
            first -= 1
            kept_s += held[first].duration
        gated = self._held_s - kept_s
        self._held = deque()
        self._held_s = 0.0
        for index in range(first, len(held)):
            old = held[index]
            await self.push(InputAudio(old.pcm, old.sample_rate, old.captured_at, True, old.ulaw))
        if gated > 1e-9 and self.ctx is not None:
            self.ctx.ledger.add_gated(gated)
        await self.push(InputAudio(frame.pcm, frame.sample_rate, frame.captured_at, True, frame.ulaw))

    def _trim_held(self) -> None:
        """Keep what a pre-roll may still need: the current voiced run plus ``preroll_ms``."""
        keep = self._preroll_s + self._voiced_run_s + 1e-6
        held = self._held
        held_s = self._held_s
        gated = 0.0
        while held:
            oldest = held[0].duration
            if held_s - oldest < keep:
                break
            held.popleft()
            held_s -= oldest
            gated += oldest
        self._held_s = held_s
        if gated and self.ctx is not None:
            self.ctx.ledger.add_gated(gated)

    def _drop_held(self) -> None:
        gated = self._held_s
        self._held.clear()
        self._held_s = 0.0
        self._voiced_run_s = 0.0
        if gated and self.ctx is not None:
            self.ctx.ledger.add_gated(gated)

    async def _finish(self) -> None:
        """End of call: close an open speech segment, count held audio as gated."""
        if self.speaking:
            self.speaking = False
            await self.push(SpeechStopped(at=self._last_voiced_end))
        self._drop_held()
