"""The pace guard of a call's inbound media: no caller may send audio much faster than it is spoken.

A phone sends 20 ms of audio every 20 ms. Network hiccups make that bursty,
so a stream may run ``burst_s`` seconds ahead of real time; beyond that its
audio is accepted at ``rate`` times real time (2x: a stream catching up after
a stall) and the rest is dropped before it reaches the pipeline, where one
stream sent at hundreds of times real time would starve every other call of
CPU. A stream that keeps it up — ``close_after_s`` seconds of audio dropped —
is not a phone: :meth:`MediaPacer.admit` says to end it.

Every message counts at least one 20 ms frame, so tiny payloads sent in a
flood are paced like full frames. Pure: the caller passes the time.
"""

from __future__ import annotations

import enum

__all__ = ["MIN_FRAME_S", "MediaPacer", "Pace"]

MIN_FRAME_S = 0.02
"""What one inbound message costs at least, in seconds of audio."""


class Pace(enum.Enum):
    """What to do with one inbound message."""

    ACCEPT = "accept"
    DROP = "drop"
    CLOSE = "close"


class MediaPacer:
    """A token bucket in seconds of audio: ``burst_s`` ahead of real time, refilled at ``rate`` x real time."""

    def __init__(self, *, rate: float = 2.0, burst_s: float = 5.0, close_after_s: float = 5.0) -> None:
        self.rate = rate
        self.burst_s = burst_s
        self.close_after_s = close_after_s
        self.dropped_s = 0.0
        self.dropped_frames = 0
        self._allowance = burst_s
        self._at: float | None = None

    def admit(self, seconds: float, now: float) -> Pace:
        """Account for a message carrying ``seconds`` of audio arriving at ``now`` (monotonic)."""
        if self._at is not None:
            self._allowance = min(self.burst_s, self._allowance + (now - self._at) * self.rate)
        self._at = now
        cost = max(seconds, MIN_FRAME_S)
        if self._allowance >= cost - 1e-9:  # float sums of 20 ms frames
            self._allowance -= cost
            return Pace.ACCEPT
        self.dropped_s += cost
        self.dropped_frames += 1
        return Pace.CLOSE if self.dropped_s > self.close_after_s else Pace.DROP
