"""When an end-of-turn inference is worth running: not once the silence limit has decided.

The endpoint stage asks the smart-turn model about a pause from a worker
thread, one inference at a time per process (one core's worth). Under load
an inference can wait for the worker longer than the profile's
``max_silence_ms``: by then the silence has ended the turn whatever the
model would say, and running it would only delay the pauses queued behind
it (each inference is ~40 ms of the core). :func:`score_unless_decided`
checks the deadline when the worker takes the job and skips the model then.

(A pause the caller ends by speaking again is already never scored: the
stage cancels the job while it waits for the worker.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["score_unless_decided"]


def score_unless_decided(score: Callable[[bytes, int], float], pcm: bytes, sample_rate: int,
                         deadline: float) -> float | None:
    """``score(pcm, sample_rate)``, or None when ``deadline`` (monotonic) passed before the worker got to it."""
    if time.monotonic() >= deadline:
        return None
    return score(pcm, sample_rate)
