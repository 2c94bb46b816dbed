"""Tones the agent plays itself: DTMF digits (in-band) and the hold tune.

**Sending digits in-band.** A Media Stream cannot send DTMF as an event, and
updating a live call's TwiML with ``<Play digits>`` would end the
``<Connect><Stream>`` (Twilio runs the new TwiML instead of the stream). So
digits are sent the way a handset sends them: as the ITU-T Q.23 dual tones
in the agent's audio, which an IVR at the other end detects like any
keypress (8 kHz μ-law carries them well). Each digit is a 120 ms tone and a
80 ms gap, at -9 dBFS per tone; ``w`` is a half-second pause, as in Twilio's
``sendDigits``.

**Hold.** While a warm transfer rings a colleague, the caller hears a soft
tune (a slow arpeggio) rather than silence; it is made here, so it needs no
file and no network.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DTMF_FREQUENCIES", "dtmf_tones", "hold_tune"]

DTMF_FREQUENCIES: dict[str, tuple[int, int]] = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}
"""Row and column frequency (Hz) of each key (ITU-T Q.23)."""

_TONE_S = 0.12
_GAP_S = 0.08
_PAUSE_S = 0.5
_AMPLITUDE = 0.35  # per tone, of full scale (-9 dBFS); the two together stay below clipping


def dtmf_tones(digits: str, sample_rate: int = 8000) -> bytes:
    """PCM16 of ``digits`` pressed one after another (``w`` pauses); ValueError for anything else."""
    pieces: list[np.ndarray] = []
    tone_n, gap_n = round(_TONE_S * sample_rate), round(_GAP_S * sample_rate)
    t = np.arange(tone_n) / sample_rate
    ramp = np.minimum(1.0, np.minimum(np.arange(tone_n), np.arange(tone_n)[::-1]) / (0.005 * sample_rate))
    for digit in digits.upper():
        if digit == "W":
            pieces.append(np.zeros(round(_PAUSE_S * sample_rate)))
            continue
        pair = DTMF_FREQUENCIES.get(digit)
        if pair is None:
            raise ValueError(f"{digit!r} is not a key (0-9, *, #, A-D, or w for a pause)")
        low, high = pair
        tone = (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)) * _AMPLITUDE * ramp
        pieces += [tone, np.zeros(gap_n)]
    if not pieces:
        return b""
    return (np.concatenate(pieces) * 32767).astype("<i2").tobytes()


def hold_tune(sample_rate: int = 8000, seconds: float = 4.0) -> bytes:
    """PCM16 of a quiet, slow arpeggio (C major, then A minor), ``seconds`` long; it loops seamlessly."""
    notes = (261.63, 329.63, 392.0, 329.63, 220.0, 261.63, 329.63, 261.63)
    note_n = round(seconds * sample_rate / len(notes))
    t = np.arange(note_n) / sample_rate
    envelope = np.exp(-3.0 * t / (note_n / sample_rate))  # each note rings and fades, like a soft piano
    notes_pcm = [np.sin(2 * np.pi * f * t) * envelope * 0.12 for f in notes]
    return (np.concatenate(notes_pcm) * 32767).astype("<i2").tobytes()
