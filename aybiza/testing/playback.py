"""Twilio's playback buffer, modelled once for every caller we simulate.

Twilio plays the agent's μ-law at 8,000 bytes a second in the order it was
sent; a ``mark`` is echoed when playback reaches it (at once when nothing is
queued); ``clear`` drops what is queued and echoes every pending mark.
:class:`PlaybackBuffer` follows that on a monotonic clock. The Twilio-like
caller keeps the audio to know what the caller heard; the load generator
keeps only the times.
"""

from __future__ import annotations

from collections import deque

__all__ = ["PlaybackBuffer"]

RATE = 8000  # μ-law bytes a second


class PlaybackBuffer:
    """What a phone has queued to play, when it will have played it, and which marks are due."""

    def __init__(self, *, keep_audio: bool = False, rate: int = RATE) -> None:
        self.rate = rate
        self.keep_audio = keep_audio
        self.played_until = 0.0  # when everything queued so far has played (monotonic)
        self.heard = bytearray()  # audio that has played (keep_audio only)
        self._marks: deque[tuple[float, str]] = deque()  # (due, name), in order
        self._queued: deque[tuple[float, bytes]] = deque()  # (start, payload): not yet fully played

    def media(self, payload: bytes | int, now: float) -> None:
        """Queue agent audio (its bytes, or only its size)."""
        size = payload if isinstance(payload, int) else len(payload)
        start = max(self.played_until, now)
        self.played_until = start + size / self.rate
        if self.keep_audio and not isinstance(payload, int):
            self._queued.append((start, payload))

    def mark(self, name: str, now: float) -> list[str]:
        """Queue a mark behind the audio; returns it at once when nothing is left to play."""
        if self.played_until <= now:
            return [name]
        self._marks.append((self.played_until, name))
        return []

    def clear(self, now: float) -> list[str]:
        """Drop what has not played; every pending mark comes back at once."""
        self._play(now)
        self._queued.clear()
        self.played_until = min(self.played_until, now)
        cleared = [name for _, name in self._marks]
        self._marks.clear()
        return cleared

    def due(self, now: float) -> list[str]:
        """Marks playback has reached by ``now`` (and, with ``keep_audio``, what played is heard)."""
        self._play(now)
        done: list[str] = []
        while self._marks and self._marks[0][0] <= now:
            done.append(self._marks.popleft()[1])
        return done

    def idle(self, now: float) -> bool:
        """Nothing left to play and no mark pending."""
        return self.played_until <= now and not self._marks

    @property
    def pending_marks(self) -> int:
        """Marks sent and not yet echoed."""
        return len(self._marks)

    def _play(self, now: float) -> None:
        while self._queued:
            start, payload = self._queued[0]
            played = min(len(payload), max(0, int((now - start) * self.rate)))
            if played < len(payload):
                if played:
                    self.heard += payload[:played]
                    self._queued[0] = (start + played / self.rate, payload[played:])
                return
            self.heard += payload
            self._queued.popleft()
