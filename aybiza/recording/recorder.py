"""One call's recording: caller left, agent right, time-aligned, streamed to a WAV file as the call goes.

Both channels run at the rate the caller's audio arrives at (8 kHz on a
Twilio call; the pipeline's 16 kHz on a browser call, whose 48 kHz Opus the
transport resamples on the way in); agent audio at another rate is resampled
to it as one stream (a voice's chunks resampled one by one would click at
every edge), restarted after a gap or a barge-in. Positions are on the call's clock, in samples since the recorder
opened:

* **caller** audio is laid end to end as it arrives: a phone (and a WebRTC
  track) sends 20 ms frames without gaps, and frames that waited in a socket
  while the server was busy arrive late in a burst — their arrival times lie,
  their order does not. Only when the caller falls more than ``_GAP_S`` behind
  the clock (media stopped flowing) does the gap become silence, so the
  channels never drift far apart;
* **agent** audio is placed when it was sent, after what is already queued:
  the transport sends a reply faster than it plays, and the caller hears it
  in order. A barge-in drops what was queued past that moment — the caller
  never heard it, and neither does the recording;
* a **pause** (digit collection: card numbers, PINs) silences both channels
  from when it started to when it ended; its span is kept for the record.

Only what can no longer change is written: everything before "now" (less a
little slack for late caller frames). Memory is therefore bounded by the
agent audio queued ahead of the clock (a reply, capped at ``_MAX_AHEAD_S``)
plus about a second; the file grows at ``rate × 4`` bytes a second. The
WAV header is completed by :meth:`close` (the standard library's
:mod:`wave` patches the lengths), which the session calls however the
call ended.
"""

from __future__ import annotations

import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..codecs import Resampler, resample, ulaw2lin

__all__ = ["CallRecorder"]

_GAP_S = 3.0  # caller audio this far behind the clock: media stopped, silence fills the gap
_SLACK_S = 0.5  # caller frames may arrive this late and still be placed in time
_FLUSH_S = 1.0  # write once this much is final
_MAX_AHEAD_S = 120.0  # agent audio queued further ahead than this is not recorded (a runaway reply)


class CallRecorder:
    """Writes a call's two channels to ``path`` as a 16-bit stereo WAV (see the module docstring)."""

    def __init__(self, path: Path, *, rate: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._t0 = clock()
        self._file: wave.Wave_write | None = None
        self.rate = rate  # the caller's rate; 0: set by the first audio (caller's, or agent's if that comes first)
        self._written = 0  # samples per channel already in the file
        self._caller = bytearray()  # PCM16 of samples [written, written + len/2)
        self._agent = bytearray()
        self._caller_end = 0  # the next caller sample's position
        self._agent_end = 0  # where the next agent audio may start (end of what is queued)
        self._agent_resampler: Resampler | None = None  # agent audio at another rate, resampled as one stream
        self._pause_from: int | None = None
        self.pauses: list[tuple[int, int]] = []  # (start, end) positions of paused spans
        self.dropped_s = 0.0  # agent audio not recorded: queued too far ahead
        self.failed = ""  # why writing stopped mid-call (the file holds what was written before)
        self.closed = False

    # -- the call's audio -----------------------------------------------------------------

    def caller(self, pcm: bytes, sample_rate: int, at: float | None = None) -> None:
        """Caller audio that arrived at ``at`` (monotonic; default now)."""
        if self.closed or not pcm:
            return
        self._open(sample_rate)
        if sample_rate != self.rate:
            pcm = resample(pcm, sample_rate, self.rate)
        count = len(pcm) // 2
        expected = self._position(at) - count
        start = max(self._caller_end, self._written)
        if expected > start + int(_GAP_S * self.rate):
            start = expected
        _put(self._caller, start - self._written, pcm)
        self._caller_end = start + count
        self._flush()

    def agent(self, pcm: bytes, sample_rate: int, at: float | None = None, *, ulaw: bytes | None = None) -> None:
        """Agent audio sent to the caller at ``at`` (PCM16, or 8 kHz μ-law alone in ``ulaw``)."""
        if self.closed:
            return
        if not pcm and ulaw:
            pcm, sample_rate = ulaw2lin(ulaw), 8000 if sample_rate <= 0 else sample_rate
        if not pcm:
            return
        self._open(sample_rate)
        now = self._position(at)
        start = max(self._agent_end, now, self._written)
        resampler = self._agent_resampler
        if resampler is not None and (start > self._agent_end or resampler.from_rate != sample_rate):
            self._end_agent_stream()  # a gap: what the resampler holds back ends the audio before it
            start = max(start, self._agent_end)
        if sample_rate != self.rate:
            if self._agent_resampler is None:
                self._agent_resampler = Resampler(sample_rate, self.rate)
            pcm = self._agent_resampler.process(pcm)
        self._place_agent(pcm, start, now)

    def _place_agent(self, pcm: bytes, start: int, now: int) -> None:
        if start - now > _MAX_AHEAD_S * self.rate:
            self.dropped_s += len(pcm) / (2 * self.rate)
            return
        _put(self._agent, start - self._written, pcm)
        self._agent_end = start + len(pcm) // 2

    def _end_agent_stream(self) -> None:
        """Place what the agent's resampler holds back (its last few ms) where the agent audio ends."""
        resampler, self._agent_resampler = self._agent_resampler, None
        if resampler is not None and self._agent_end >= self._written:
            tail = resampler.flush()
            if tail:
                self._place_agent(tail, self._agent_end, self._agent_end)

    def interrupted(self, at: float | None = None) -> None:
        """Barge-in: agent audio queued past ``at`` was never heard; drop it."""
        if self.closed or not self.rate:
            return
        self._agent_resampler = None  # what it holds back was never heard either
        now = max(self._position(at), self._written)
        if self._agent_end > now:
            del self._agent[(now - self._written) * 2:]
            self._agent_end = now

    def pause(self, paused: bool, at: float | None = None) -> None:
        """Start (or end) a paused span: both channels silent from here (PCI: digits being collected)."""
        if self.closed:
            return
        position = self._position(at) if self.rate else 0
        if paused and self._pause_from is None:
            self._pause_from = max(self._whole_ms(position, up=False), self._written)
        elif not paused and self._pause_from is not None:
            self.pauses.append((self._pause_from, max(self._whole_ms(position, up=True), self._pause_from)))
            self._pause_from = None

    @property
    def paused(self) -> bool:
        """Whether a paused span is open."""
        return self._pause_from is not None

    # -- the end ---------------------------------------------------------------------------

    def close(self, at: float | None = None) -> float:
        """Write everything up to ``at`` (the call's end), complete the header; the length in seconds."""
        if self.closed:
            return self.duration_s
        if self._file is None:  # no audio at all: an empty (or all-silent) recording of the call's length
            self._open(self.rate or 8000)
        self._end_agent_stream()
        end = max(self._position(at), self._caller_end)
        if self._pause_from is not None:
            self.pauses.append((self._pause_from, max(end, self._pause_from)))
            self._pause_from = None
        self._write_until(end)
        assert self._file is not None
        self._file.close()
        self.closed = True
        return self.duration_s

    def abort(self) -> None:
        """Close the file without writing what is buffered (writing failed)."""
        if self._file is not None and not self.closed:
            try:
                self._file.close()
            except OSError:
                pass
        self.closed = True

    @property
    def duration_s(self) -> float:
        """Seconds written so far."""
        return self._written / self.rate if self.rate else 0.0

    def pause_spans_s(self) -> list[tuple[float, float]]:
        """The paused spans in seconds from the start of the recording."""
        rate = self.rate or 1
        return [(round(start / rate, 3), round(end / rate, 3)) for start, end in self.pauses]

    # -- inside ------------------------------------------------------------------------------

    def _position(self, at: float | None) -> int:
        moment = self._clock() if at is None else at
        return max(0, int((moment - self._t0) * (self.rate or 8000)))

    def _whole_ms(self, position: int, *, up: bool) -> int:
        """``position`` on a millisecond boundary, outward: the span silenced is the span reported (in ms)."""
        per_ms = max(1, (self.rate or 8000) // 1000)
        return -(-position // per_ms) * per_ms if up else position // per_ms * per_ms

    def _open(self, sample_rate: int) -> None:
        if self._file is not None:
            return
        self.rate = self.rate or sample_rate
        handle = wave.open(str(self.path), "wb")  # noqa: SIM115 - open for the whole call, closed by close()
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(self.rate)
        self._file = handle

    def _flush(self) -> None:
        final = min(self._position(None) - int(_SLACK_S * self.rate), self._caller_end)
        if final - self._written >= int(_FLUSH_S * self.rate):
            try:
                self._write_until(final)
            except OSError as error:  # a full disk stops the recording, never the call
                self.failed = f"{type(error).__name__}: {error}"
                self.abort()

    def _write_until(self, end: int) -> None:
        """Interleave and write samples [written, end); silence where a channel has nothing or a pause is."""
        count = end - self._written
        if count <= 0 or self._file is None:
            return
        frames = np.zeros((count, 2), dtype=np.int16)
        for channel, data in enumerate((self._caller, self._agent)):
            have = min(count, len(data) // 2)
            if have:
                frames[:have, channel] = np.frombuffer(data, dtype=np.int16, count=have)
            del data[: have * 2]
        spans = [*self.pauses, *([(self._pause_from, end)] if self._pause_from is not None else [])]
        for start, stop in spans:
            low, high = max(start - self._written, 0), min(stop - self._written, count)
            if low < high:
                frames[low:high] = 0
        self._file.writeframesraw(frames.tobytes())
        self._written = end


def _put(buffer: bytearray, offset: int, pcm: bytes) -> None:
    """Write ``pcm`` into ``buffer`` at sample ``offset`` (growing it with silence as needed)."""
    start = max(offset, 0) * 2
    if start > len(buffer):
        buffer.extend(bytes(start - len(buffer)))
    buffer[start:start + len(pcm)] = pcm
