"""Scores shared by the human-speech benchmarks: word error rate, Spearman's ρ, percentiles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .human import words_of

__all__ = ["edit_distance", "percentile", "word_error_rate"]


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word errors / reference words (normalised text; 1.0 for an empty reference with any output)."""
    ref, hyp = words_of(reference), words_of(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (None for no values)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None
