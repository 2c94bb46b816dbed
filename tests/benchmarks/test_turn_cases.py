"""The end-of-turn benchmark's pause cases: where a sentence is cut, and the words said before the cut."""

from __future__ import annotations

import numpy as np

from benchmarks.corpus.turns import TurnCase, _continuing_cuts
from benchmarks.endpoint import exact_words

WORDS = [("i", 0.0, 0.1), ("went", 0.1, 0.3), ("to", 0.3, 0.4), ("the", 0.4, 0.5), ("shop", 0.5, 0.8),
         ("today", 0.8, 1.0)]


def test_a_sentence_is_cut_only_after_words_it_goes_on_from_and_knows_the_words_before() -> None:
    assert _continuing_cuts(WORDS, "en") == [(0.4, "i went to"), (0.5, "i went to the")]


def test_exact_words_are_the_words_before_the_pause_then_unknown() -> None:
    case = TurnCase("x@700", "en", np.zeros(8000), 1.9, (0.5, 1.2), said_before="i went to the")
    words = exact_words(case)
    assert words(b"", 8000, 0.48) == "i went to the"  # the stop at the pause
    assert words(b"", 8000, 1.9) == ""  # the stop at the end: the audio decides
    finished = TurnCase("y", "en", np.zeros(8000), 1.0, None, said_before="i went to the shop today")
    assert exact_words(finished)(b"", 8000, 1.0) == "i went to the shop today"
