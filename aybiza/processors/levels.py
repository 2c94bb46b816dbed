"""Frame energy, computed once per caller frame for the stages that all need it.

The quality meter and the VAD's noise-floor gate both start every 20 ms
frame with the same measure: the mean square of its PCM16 samples. They see
the same ``bytes`` object one after the other on the frame path, so the last
result is kept and handed to the second asker instead of being computed again.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mean_square"]

_last: tuple[bytes, float] = (b"", 0.0)  # (the PCM object measured last, its mean square): swapped whole


def mean_square(pcm: bytes) -> float:
    """Mean of the squared PCM16 samples of ``pcm`` (0.0 for no samples); float32 arithmetic."""
    global _last
    last = _last
    if last[0] is pcm:
        return last[1]
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    power = float(np.dot(samples, samples)) / samples.size if samples.size else 0.0
    _last = (pcm, power)
    return power
