"""DTMF tones sent in-band are the keys' Q.23 frequency pairs, and the hold tune is quiet and seamless."""

from __future__ import annotations

import numpy as np
import pytest

from aybiza.codecs import lin2ulaw, ulaw2lin
from aybiza.tools.tones import DTMF_FREQUENCIES, dtmf_tones, hold_tune

RATE = 8000


def goertzel(samples: np.ndarray, frequency: float) -> float:
    """The power of ``frequency`` in ``samples`` (how DTMF receivers detect keys)."""
    coefficient = 2 * np.cos(2 * np.pi * frequency / RATE)
    s1 = s2 = 0.0
    for sample in samples:
        s1, s2 = sample + coefficient * s1 - s2, s1
    return float(s1 * s1 + s2 * s2 - coefficient * s1 * s2)


def detect(pcm: bytes) -> str:
    """Decode keys from audio like an IVR would: the strongest row and column tone of each burst."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    rows, columns = (697, 770, 852, 941), (1209, 1336, 1477, 1633)
    keys, step = "", int(0.2 * RATE)  # 120 ms tone + 80 ms gap
    for start in range(0, len(samples) - step + 1, step):
        burst = samples[start:start + int(0.1 * RATE)]
        row = max(rows, key=lambda f: goertzel(burst, f))
        column = max(columns, key=lambda f: goertzel(burst, f))
        keys += next(k for k, pair in DTMF_FREQUENCIES.items() if pair == (row, column))
    return keys


def test_every_key_survives_the_phone_codec() -> None:
    keys = "1234567890*#ABCD"
    pcm = ulaw2lin(lin2ulaw(dtmf_tones(keys, RATE)))  # what Twilio carries: 8 kHz μ-law
    assert detect(pcm) == keys


def test_a_pause_and_a_wrong_key() -> None:
    assert len(dtmf_tones("1w2", RATE)) == 2 * int(RATE * (0.12 + 0.08 + 0.12 + 0.08 + 0.5))
    with pytest.raises(ValueError, match="not a key"):
        dtmf_tones("1x")


def test_the_hold_tune_is_quiet_and_loops_without_a_click() -> None:
    samples = np.frombuffer(hold_tune(RATE, 4.0), dtype="<i2")
    assert len(samples) == 4 * RATE
    assert np.abs(samples).max() < 0.15 * 32768
    assert abs(int(samples[-1])) < 200 and abs(int(samples[0])) < 200
