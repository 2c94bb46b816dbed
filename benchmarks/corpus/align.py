"""Word timings for recordings that ship without them, from faster-whisper base (cached per clip).

Used only to place a pause at a word boundary where a sentence cannot end
(after an article, a preposition, a conjunction); the timings are the
recogniser's, on the clean 16 kHz recording.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import numpy as np

from aybiza.processors.packaged import WHISPER_BASE, joined_dir

from .fetch import cache_dir
from .human import Clip, normalise

__all__ = ["CONTINUING", "word_times"]

CONTINUING: dict[str, frozenset[str]] = {
    "en": frozenset("a an the of to and or with in on at for from by that is are was his her my your".split()),
    "es": frozenset("un una unos unas el la los las de del a al y o con en por para que su sus es".split()),
    "fr": frozenset("un une des le la les de du au aux et ou avec en dans sur pour par que qui son sa ses est".split()),
}
"""Words after which a sentence goes on (a pause there is a pause, not an end)."""


@cache
def _model() -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(str(joined_dir(WHISPER_BASE, cache_dir() / "models")), device="cpu", compute_type="int8",
                        cpu_threads=1)


def word_times(clip: Clip) -> list[tuple[str, float, float]]:
    """``(word, start, end)`` in seconds for the clip (cached in the corpus directory)."""
    path = cache_dir() / "align" / (clip.id.replace("/", "__") + ".json")
    if path.is_file():
        return [tuple(w) for w in json.loads(path.read_text())]  # type: ignore[misc]
    segments, _ = _model().transcribe(clip.audio().astype(np.float32), language=clip.language, beam_size=5,
                                      word_timestamps=True, condition_on_previous_text=False, vad_filter=False)
    words = [(normalise(w.word), float(w.start), float(w.end)) for s in segments for w in (s.words or [])]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(words))
    return words
