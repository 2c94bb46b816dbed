"""Frame energy: measured once per frame however many stages ask."""

from __future__ import annotations

import numpy as np

from aybiza.processors import levels
from aybiza.processors.levels import mean_square


def test_mean_square_is_the_mean_of_the_squared_samples() -> None:
    samples = np.array([3, -4, 0, 100, -200], dtype="<i2")
    assert mean_square(samples.tobytes()) == (9 + 16 + 0 + 10_000 + 40_000) / 5
    assert mean_square(b"") == 0.0


def test_the_second_stage_asking_about_the_same_frame_gets_the_first_answer() -> None:
    pcm = np.full(160, 1000, dtype="<i2").tobytes()
    first = mean_square(pcm)
    assert levels._last == (pcm, first)
    assert mean_square(pcm) == first
    other = np.full(160, 10, dtype="<i2").tobytes()
    assert mean_square(other) == 100.0, "another frame is measured afresh"
