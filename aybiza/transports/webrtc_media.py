"""WebRTC media for a browser call: decoded caller audio in, paced agent audio out.

:class:`AudioInput` turns the browser's decoded audio frames (Opus, decoded
by aiortc to 48 kHz, any layout) into 20 ms :class:`InputAudio` frames at the
pipeline's rate; :class:`PacedAudioTrack` serves agent audio as 20 ms frames
on a monotonic schedule, silence when idle, and drops what is queued on
barge-in.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from ..codecs import Framer, Resampler, frame_bytes
from ..errors import ProtocolError
from ..pipeline import InputAudio

__all__ = ["AudioInput", "FRAME_MS", "PIPELINE_RATE", "PacedAudioTrack", "TRACK_RATE", "mono_pcm16"]

PIPELINE_RATE = 16000
TRACK_RATE = 48000
FRAME_MS = 20


def mono_pcm16(frame: AudioFrame) -> bytes:
    """One decoded audio frame (any layout, packed or planar, int or float) as PCM16 mono."""
    channels = frame.layout.nb_channels
    samples = frame.to_ndarray()
    if not frame.format.is_planar:
        samples = samples.reshape(-1, channels).T
    if samples.dtype == np.int16 and channels == 1:
        return bytes(samples[0].tobytes())
    scale = _SCALE_TO_INT16.get(samples.dtype.str[1:])
    if scale is None:
        raise ProtocolError(f"unsupported audio sample format {frame.format.name}")
    mono = samples.astype(np.float32).mean(axis=0) * scale
    return bytes(np.clip(np.rint(mono), -32768, 32767).astype(np.int16).tobytes())


_SCALE_TO_INT16 = {"i2": 1.0, "i4": 1.0 / 65536, "f4": 32767.0, "f8": 32767.0}


class AudioInput:
    """Browser audio frames -> 20 ms PCM16 mono :class:`InputAudio` at the pipeline's rate (soxr)."""

    __slots__ = ("rate", "_resampler", "_framer")

    def __init__(self, rate: int = PIPELINE_RATE, frame_ms: int = FRAME_MS) -> None:
        self.rate = rate
        self._resampler: Resampler | None = None
        self._framer = Framer(frame_bytes(rate, frame_ms))

    def push(self, frame: AudioFrame, now: float) -> list[InputAudio]:
        """Frames completed by ``frame``; ``now`` (monotonic) becomes their capture time."""
        if self._resampler is None or self._resampler.from_rate != frame.sample_rate:
            self._resampler = Resampler(frame.sample_rate, self.rate)
        pcm = self._resampler.process(mono_pcm16(frame))
        return [InputAudio(chunk, self.rate, now) for chunk in self._framer.push(pcm)]


class _Segment:
    __slots__ = ("turn_id", "data", "offset")

    def __init__(self, turn_id: int, data: bytes) -> None:
        self.turn_id = turn_id
        self.data = data
        self.offset = 0


class PacedAudioTrack(MediaStreamTrack):
    """Outgoing agent audio: a 20 ms frame per ``recv`` on a monotonic schedule, silence when idle.

    ``enqueue`` adds agent audio (PCM16 mono at ``sample_rate``); ``flush``
    drops it (barge-in). ``on_playing(turn_id)`` fires when a turn's audio
    starts going out (again, after a gap); ``on_idle()`` when the queue runs dry.
    If the sender falls more than ``max_lag_s`` behind (a stalled loop) the
    schedule restarts from now instead of bursting to catch up.
    """

    kind = "audio"

    def __init__(
        self,
        *,
        sample_rate: int = TRACK_RATE,
        frame_ms: int = FRAME_MS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_lag_s: float = 0.1,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.samples = sample_rate * frame_ms // 1000
        self.frame_s = frame_ms / 1000
        self._frame_bytes = self.samples * 2
        self._silence = bytes(self._frame_bytes)
        self._time_base = fractions.Fraction(1, sample_rate)
        self._clock = clock
        self._sleep = sleep
        self._max_lag = max_lag_s
        self._segments: deque[_Segment] = deque()
        self._buffered = 0
        self._start: float | None = None
        self._frames = 0
        self._playing_turn: int | None = None
        self.on_playing: Callable[[int], None] | None = None
        self.on_idle: Callable[[], None] | None = None

    @property
    def buffered_s(self) -> float:
        """Seconds of agent audio queued and not yet sent."""
        return self._buffered / (2 * self.sample_rate)

    @property
    def playing(self) -> bool:
        """Whether agent audio is queued or going out."""
        return self._buffered > 0

    def enqueue(self, pcm: bytes, turn_id: int) -> None:
        """Queue agent audio of ``turn_id`` behind what is already queued."""
        if pcm:
            self._segments.append(_Segment(turn_id, pcm))
            self._buffered += len(pcm)

    def flush(self) -> float:
        """Drop all queued audio (barge-in); return how many seconds were dropped."""
        dropped = self.buffered_s
        self._segments.clear()
        self._buffered = 0
        self._playing_turn = None
        return dropped

    async def recv(self) -> AudioFrame:
        """The next 20 ms frame, when it is due."""
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock()
        if self._start is None:
            self._start = now
        else:
            wait = self._start + self._frames * self.frame_s - now
            if wait > 0:
                await self._sleep(wait)
            elif wait < -self._max_lag:
                self._start = now - self._frames * self.frame_s
        frame = AudioFrame(format="s16", layout="mono", samples=self.samples)
        frame.planes[0].update(self._next_pcm())
        frame.pts = self._frames * self.samples
        frame.sample_rate = self.sample_rate
        frame.time_base = self._time_base
        self._frames += 1
        return frame

    def _next_pcm(self) -> bytes:
        if not self._segments:
            return self._silence
        need = self._frame_bytes
        parts: list[bytes] = []
        while need and self._segments:
            segment = self._segments[0]
            if segment.turn_id != self._playing_turn:
                self._playing_turn = segment.turn_id
                if self.on_playing is not None:
                    self.on_playing(segment.turn_id)
            chunk = segment.data[segment.offset : segment.offset + need]
            segment.offset += len(chunk)
            need -= len(chunk)
            parts.append(chunk)
            if segment.offset >= len(segment.data):
                self._segments.popleft()
        self._buffered -= self._frame_bytes - need
        if need:
            parts.append(bytes(need))
        if not self._segments:
            self._playing_turn = None
            if self.on_idle is not None:
                self.on_idle()
        return b"".join(parts)
