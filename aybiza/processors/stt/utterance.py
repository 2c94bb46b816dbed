"""Shared pieces of the embedded STT stages: utterance buffering at one rate, capped in length.

Caller audio arrives as small ``InputAudio`` frames between ``SpeechStarted``
and ``SpeechStopped``. :class:`UtteranceBuffer` collects them at one sample
rate, caps an utterance's length (so memory stays bounded however long a
caller talks) and hands the collected PCM on, all at once (whisper) or in
small pieces as it arrives (pocketsphinx).
"""

from __future__ import annotations

from ...codecs import resample
from ...pipeline.frames import InputAudio

__all__ = ["UtteranceBuffer", "MODEL_RATE"]

MODEL_RATE = 16_000
"""Both embedded recognisers expect 16 kHz audio."""


class UtteranceBuffer:
    """PCM16 of the utterance in progress, at the rate of its first frame, capped in length.

    ``start()`` opens an utterance, ``add(frame)`` appends caller audio while
    one is open, ``take()`` returns (and clears) what is pending, ``stop()``
    closes it. ``full`` turns true once ``max_seconds`` have been added.
    """

    __slots__ = ("max_seconds", "sample_rate", "_pending", "_utterance_bytes", "_collecting")

    def __init__(self, max_seconds: float = 30.0) -> None:
        if max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        self.max_seconds = max_seconds
        self.sample_rate = 0
        self._pending = bytearray()
        self._utterance_bytes = 0
        self._collecting = False

    @property
    def collecting(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._collecting

    @property
    def pending_seconds(self) -> float:
        """Seconds of audio added and not yet taken."""
        return len(self._pending) / (2 * self.sample_rate) if self.sample_rate else 0.0

    @property
    def utterance_seconds(self) -> float:
        """Seconds of audio added since ``start()`` (taken or not)."""
        return self._utterance_bytes / (2 * self.sample_rate) if self.sample_rate else 0.0

    @property
    def full(self) -> bool:
        """The utterance reached ``max_seconds``."""
        return self.utterance_seconds >= self.max_seconds

    def start(self) -> None:
        """Open a new utterance (drops anything pending from the previous one)."""
        self._pending.clear()
        self._utterance_bytes = 0
        self.sample_rate = 0
        self._collecting = True

    def stop(self) -> None:
        """Close the utterance; later audio is ignored until the next ``start()``."""
        self._collecting = False

    def add(self, frame: InputAudio) -> None:
        """Append a frame's audio if an utterance is open and not yet full."""
        if not self._collecting or self.full or not frame.pcm:
            return
        pcm = frame.pcm
        if not self.sample_rate:
            self.sample_rate = frame.sample_rate
        elif frame.sample_rate != self.sample_rate:
            # A transport never changes rate mid-call; if one does, keep the utterance coherent.
            pcm = resample(pcm, frame.sample_rate, self.sample_rate)
        self._pending += pcm
        self._utterance_bytes += len(pcm)

    def peek(self) -> bytes:
        """The pending audio so far, left in place (an early transcription of a pause reads it)."""
        return bytes(self._pending)

    def take(self) -> bytes:
        """The pending audio, which is then cleared (the utterance stays open)."""
        pcm = bytes(self._pending)
        self._pending.clear()
        return pcm
