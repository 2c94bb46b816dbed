"""Codecs, the leaf every audio path imports: G.711 μ-law by table lookup, resampling, 20 ms framing.

Transports (Twilio's μ-law, WebRTC's 48 kHz) and processors (VAD, the
recognisers, TTS engines) both use it; it imports nothing of the project.

μ-law follows ITU-T G.711 as the classic Sun reference implements it (the
same one CPython's ``audioop`` used): 14-bit magnitude, bias 33, eight
segments. Encoding is one lookup in a 65,536-entry table indexed by the
int16 sample's bit pattern; decoding one lookup in a 256-entry table.

Resampling uses soxr. A ``soxr.ResampleStream`` at good quality releases
audio in ~100 ms bursts, far too late for a call; the ``Resampler`` here
resamples a short sliding window with soxr's one-shot API instead and holds
back only ``lookahead_ms`` (4 ms) so the filter sees enough future input.
"""

from __future__ import annotations

from functools import cache
from math import gcd

import numpy as np
import numpy.typing as npt
import soxr

__all__ = [
    "ulaw2lin",
    "lin2ulaw",
    "ulaw_decode_table",
    "ulaw_encode_table",
    "Resampler",
    "resample",
    "resample_samples",
    "Framer",
    "frame_bytes",
    "ULAW_SILENCE",
]

ULAW_SILENCE = 0xFF
_BIAS = 0x84
_CLIP = 8159
_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


@cache
def ulaw_decode_table() -> npt.NDArray[np.int16]:
    """The 256 μ-law codes as int16 samples."""
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((code & 0x0F) << 3) + _BIAS) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, _BIAS - magnitude, magnitude - _BIAS).astype(np.int16)


@cache
def ulaw_encode_table() -> npt.NDArray[np.uint8]:
    """μ-law code for every int16 sample, indexed by the sample's uint16 bit pattern."""
    samples = np.arange(65536, dtype=np.int32)
    samples = np.where(samples >= 32768, samples - 65536, samples) >> 2  # 14-bit
    mask = np.where(samples < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(samples), _CLIP) + (_BIAS >> 2)
    segment = np.searchsorted(_SEGMENT_ENDS, magnitude, side="left")
    mantissa = (magnitude >> np.minimum(segment + 1, 31)) & 0x0F
    code = np.where(segment >= 8, 0x7F, (np.minimum(segment, 7) << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


@cache
def _ulaw_decode_bytes() -> tuple[bytes, bytes]:
    """The decode table as two ``bytes.translate`` tables: each code's low byte and high byte (PCM16LE)."""
    pcm = ulaw_decode_table().astype("<i2").tobytes()
    return pcm[0::2], pcm[1::2]


def ulaw2lin(ulaw: bytes) -> bytes:
    """Decode μ-law bytes to PCM16LE bytes.

    Every caller frame goes through here: two ``bytes.translate`` lookups
    interleaved in C cost about half of a numpy gather for a 20 ms frame.
    """
    low, high = _ulaw_decode_bytes()
    pcm = bytearray(2 * len(ulaw))
    pcm[0::2] = ulaw.translate(low)
    pcm[1::2] = ulaw.translate(high)
    return bytes(pcm)


def lin2ulaw(pcm: bytes) -> bytes:
    """Encode PCM16LE bytes to μ-law bytes."""
    return ulaw_encode_table()[np.frombuffer(pcm, dtype=np.uint16)].tobytes()


def resample_samples(pcm: bytes, from_rate: int, to_rate: int) -> npt.NDArray[np.int16]:
    """PCM16 bytes at ``from_rate`` as int16 samples at ``to_rate`` (soxr HQ, whole buffer at once)."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    if from_rate == to_rate or samples.size == 0:
        return samples
    resampled: npt.NDArray[np.int16] = soxr.resample(samples, from_rate, to_rate, quality="HQ").astype(np.int16)
    return resampled


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample a whole PCM16 buffer at once (an utterance, a TTS clause)."""
    if from_rate == to_rate or not pcm:
        return pcm
    return resample_samples(pcm, from_rate, to_rate).tobytes()


class Resampler:
    """Streaming PCM16 resampler that adds ``lookahead_ms`` of delay and no bursts.

    Each call resamples (history + new input) and returns the output for
    the input that is at least ``lookahead_ms`` old; the rest follows with
    the next chunk (or ``flush``). History is kept in whole blocks of the
    rate ratio so input and output positions stay exactly aligned.
    """

    __slots__ = ("from_rate", "to_rate", "_block_in", "_block_out", "_lookahead", "_context", "_history",
                 "_history_start", "_produced", "_consumed")

    def __init__(self, from_rate: int, to_rate: int, *, lookahead_ms: float = 4.0, context_ms: float = 10.0):
        self.from_rate = from_rate
        self.to_rate = to_rate
        divisor = gcd(from_rate, to_rate)
        self._block_in = from_rate // divisor
        self._block_out = to_rate // divisor
        self._lookahead = int(from_rate * lookahead_ms / 1000)
        context = int(from_rate * context_ms / 1000) + self._lookahead
        self._context = -(-context // self._block_in) * self._block_in
        self._history = np.zeros(0, dtype=np.float32)
        self._history_start = 0  # input index of history[0], a multiple of _block_in
        self._produced = 0  # output samples returned so far
        self._consumed = 0  # input samples received so far

    @property
    def delay_ms(self) -> float:
        """Delay this resampler adds, in milliseconds."""
        return 1000.0 * self._lookahead / self.from_rate

    def process(self, pcm: bytes) -> bytes:
        """Feed PCM16 input; return the PCM16 output that is ready."""
        if self.from_rate == self.to_rate:
            return pcm
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
        self._history = np.concatenate((self._history, samples))
        self._consumed += len(samples)
        return self._emit(self._consumed - self._lookahead)

    def flush(self) -> bytes:
        """Return what is held back (end of stream)."""
        if self.from_rate == self.to_rate:
            return b""
        return self._emit(self._consumed)

    def _emit(self, ready_input: int) -> bytes:
        ready_output = ready_input * self.to_rate // self.from_rate
        if ready_output <= self._produced or len(self._history) == 0:
            return b""
        out: npt.NDArray[np.float32] = soxr.resample(self._history, self.from_rate, self.to_rate, quality="HQ")
        offset = self._history_start * self.to_rate // self.from_rate
        chunk = out[self._produced - offset : ready_output - offset]
        self._produced += len(chunk)
        self._trim()
        return np.clip(np.rint(chunk), -32768, 32767).astype(np.int16).tobytes()

    def _trim(self) -> None:
        excess = len(self._history) - self._context
        if excess >= self._block_in:
            drop = excess - excess % self._block_in
            self._history = self._history[drop:]
            self._history_start += drop


def frame_bytes(sample_rate: int, frame_ms: int = 20, sample_width: int = 2) -> int:
    """Bytes in one frame of ``frame_ms`` at ``sample_rate``."""
    return sample_rate * frame_ms // 1000 * sample_width


class Framer:
    """Cuts a byte stream into fixed-size frames (20 ms by default), keeping the remainder."""

    __slots__ = ("size", "_buffer")

    def __init__(self, size: int) -> None:
        self.size = size
        self._buffer = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        """Add bytes; return every complete frame."""
        if not self._buffer and len(data) == self.size:
            return [data]
        self._buffer += data
        count = len(self._buffer) // self.size
        frames = [bytes(self._buffer[i * self.size : (i + 1) * self.size]) for i in range(count)]
        del self._buffer[: count * self.size]
        return frames

    def flush(self, pad: int = 0) -> bytes:
        """Return the partial frame, padded with byte ``pad`` to a full frame (empty if none)."""
        if not self._buffer:
            return b""
        data = bytes(self._buffer) + bytes([pad]) * (self.size - len(self._buffer))
        self._buffer.clear()
        return data
