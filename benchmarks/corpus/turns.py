"""Turn-taking cases from human speech: finished utterances, and sentences split by a pause.

A *finished* case is one stamp description (a complete utterance, read on
its own) followed by two seconds of line noise: the turn should end soon
after the speech does. A *pause* case splits one recording after a word the
sentence cannot end on (an article, a preposition, a conjunction: LibriVox
word alignments, or :mod:`.align`'s timings for the stamp descriptions) and
puts 200-1200 ms of line noise in the gap: ending the turn before the
speaker goes on is a cut-off. LibriVox sentences are narration in the middle
of a paragraph (their ends are not turn ends), so they give pause cases only.
Cases are at 8 kHz through μ-law, over a quiet line (pink noise 45 dB under
the speech), labelled human.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.accuracy.corpus import frame_levels_db, make_noise, telephone

from .align import CONTINUING, word_times
from .fetch import Signal
from .human import Clip, librivox, tuxpaint
from .mix import active_rms

__all__ = ["PAUSES_MS", "TurnCase", "turn_cases"]

RATE = 16000
PAUSES_MS = (200, 400, 500, 600, 700, 800, 900, 1200)


@dataclass(frozen=True)
class TurnCase:
    """One case: 8 kHz μ-law-decoded samples, when speech really ends, and the pause (None: finished)."""

    id: str
    language: str
    audio: Signal  # 8 kHz
    speech_end: float  # seconds: the end of the last word
    pause: tuple[float, float] | None  # (start, end) seconds of the inserted pause
    human: bool = True
    said_before: str = ""  # the words before the pause (per the alignment); a finished case: all its words


def _speech_bounds(audio: Signal) -> tuple[float, float]:
    levels = frame_levels_db(audio, RATE)
    active = np.flatnonzero(levels > levels.max() - 35)
    return float(active[0]) * 0.02, float(active[-1] + 1) * 0.02


def _line(signal: Signal, rng: np.random.Generator) -> Signal:
    """Over a quiet line, through the phone channel."""
    hiss = make_noise("pink", signal.size, RATE, rng) * active_rms(signal) / 10 ** (45 / 20)
    return telephone(signal + hiss, RATE)


def _case(clip: Clip, cut: tuple[float, str] | None, pause_ms: int, rng: np.random.Generator) -> TurnCase:
    audio = clip.audio()
    start, end = _speech_bounds(audio)
    audio = audio[max(0, int((start - 0.3) * RATE)) : int((end + 0.05) * RATE)]
    end = end + 0.05 - max(0.0, start - 0.3)
    tail = np.zeros(2 * RATE)
    if cut is None:
        return TurnCase(clip.id, clip.language, _line(np.concatenate((audio, tail)), rng), end, None,
                        said_before=clip.text)
    cut_at = int((cut[0] - max(0.0, start - 0.3)) * RATE)
    gap = np.zeros(int(pause_ms / 1000 * RATE))
    signal = np.concatenate((audio[:cut_at], gap, audio[cut_at:], tail))
    return TurnCase(f"{clip.id}@{pause_ms}", clip.language, _line(signal, rng), end + gap.size / RATE,
                    (cut_at / RATE, (cut_at + gap.size) / RATE), said_before=cut[1])


def _continuing_cuts(words: Sequence[tuple[str, float, float]], language: str) -> list[tuple[float, str]]:
    """Ends of the words after which the sentence must go on (not the first or the last two words), and the
    words up to each."""
    continuing = CONTINUING[language]
    return [(end, " ".join(w for w, _, _ in words[: index + 2])) for index, (word, _, end) in enumerate(words[1:-2])
            if word in continuing]


def turn_cases(per_language: int = 40, seed: int = 7) -> list[TurnCase]:
    """Finished and pause cases from LibriVox (en) and stamp descriptions (en, es, fr)."""
    rng = np.random.default_rng(seed)
    cases: list[TurnCase] = []
    for clip in librivox():
        for index, cut in enumerate(_continuing_cuts(clip.words, "en")):
            cases.append(_case(clip, cut, PAUSES_MS[(index + len(cases)) % len(PAUSES_MS)], rng))
    for language in ("en", "es", "fr"):
        clips = tuxpaint(language)
        chosen = [clips[i] for i in rng.permutation(len(clips))[:per_language]]
        for number, clip in enumerate(chosen):
            cases.append(_case(clip, None, 0, rng))
            cuts = _continuing_cuts(word_times(clip), language)
            if cuts:
                cut = cuts[int(rng.integers(len(cuts)))]
                cases.append(_case(clip, cut, PAUSES_MS[number % len(PAUSES_MS)], rng))
    return cases
