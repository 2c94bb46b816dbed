"""Recognition and language ID on human speech at 8 kHz μ-law: WER per language per recogniser, LID on 1-3 s.

Clips (all human; ``benchmarks/corpus``): English from pocketsphinx's
recordings (LibriVox sentences, "go forward", playing cards) and Tux Paint's
English descriptions of three words or more (most are "A frog"); Spanish and
French from Tux Paint's descriptions.
Texts edited after recording are dropped first (:func:`benchmarks.corpus.human.checked`,
on the clean 16 kHz audio with whisper base). Every clip then goes through
the telephone channel (8 kHz μ-law) and each embedded recogniser that speaks
its language: whisper tiny.en (English), whisper base with the language
forced (en, es, fr: what a call uses for other languages) and pocketsphinx
(English). Deepgram needs a key and the network: not measured here.

Language ID: the first 1-3 s of each clip (clips shorter than 1 s left
out), by audio (whisper base, restricted to en/es/fr/de as the call does)
and by text (lingua on whisper base's transcript without a forced language).

Run: ``.venv/bin/python -m benchmarks.speech_human [--quick]`` (prints the figures).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import time
from typing import Any

import numpy as np

from aybiza.config import Settings
from aybiza.engines import Engines
from aybiza.processors.language import DEFAULT_LANGUAGES, detect_language, detector_for
from aybiza.processors.stt.sphinx import SphinxRecognizer
from aybiza.processors.stt.whisper import WhisperRecognizer
from benchmarks.corpus.fetch import cache_dir, have_tools
from benchmarks.corpus.human import Clip, checked, librivox, pocketsphinx_en, tuxpaint, words_of
from benchmarks.corpus.mix import telephone, to_pcm16
from benchmarks.corpus.score import edit_distance

__all__ = ["clips", "run"]

LANGUAGES = ("en", "es", "fr")


def _pcm(signal: np.ndarray) -> bytes:
    return bytes(to_pcm16(signal).tobytes())


def clips(per_language: int, base: WhisperRecognizer, seed: int = 5) -> dict[str, list[Clip]]:
    """Checked human clips per language (at most ``per_language``)."""
    rng = np.random.default_rng(seed)
    english = [*librivox(), *pocketsphinx_en(), *(c for c in tuxpaint("en") if len(c.text.split()) >= 3)]
    pools = {"en": english, "es": tuxpaint("es"), "fr": tuxpaint("fr")}
    chosen = {}
    for language, pool in pools.items():
        picked = [pool[int(i)] for i in rng.permutation(len(pool))[: int(per_language * 1.4)]]
        good = checked(picked, lambda clip: base.transcribe(_pcm(clip.audio()), 16000, clip.language),
                       tag=f"{language}-whisper-base")
        chosen[language] = good[:per_language]
    return chosen


_NUMBERS = dict(enumerate("zero one two three four five six seven eight nine ten eleven twelve".split()))


def _spelled(text: str) -> list[str]:
    """Normalised words, digits 0-12 spelled out (recognisers write "10" for "ten")."""
    return [_NUMBERS.get(int(w), w) if w.isdigit() else w for w in words_of(text)]


def _wer(pairs: list[tuple[str, str]]) -> float:
    errors = sum(edit_distance(_spelled(ref), _spelled(hyp)) for ref, hyp in pairs)
    words = sum(len(_spelled(ref)) for ref, _ in pairs)
    return round(errors / words, 3) if words else 0.0


def run(quick: bool = False) -> dict[str, Any]:
    """WER per language and recogniser; LID accuracy on 1-3 s."""
    if not have_tools():
        return {"skipped": "needs sox, apt-get and dpkg-deb to fetch the human recordings"}
    started = time.perf_counter()
    engines = Engines(Settings(data_dir=cache_dir()))
    tiny, base = engines.whisper("en"), engines.whisper("es")
    sphinx = SphinxRecognizer()
    sets = clips(12 if quick else 40, base)
    wer: dict[str, dict[str, float]] = {}
    examples: list[dict[str, str]] = []
    lid_audio: dict[str, list[bool]] = {language: [] for language in LANGUAGES}
    lid_text: dict[str, list[bool]] = {language: [] for language in LANGUAGES}
    detector = detector_for(frozenset(DEFAULT_LANGUAGES))
    candidates = frozenset(DEFAULT_LANGUAGES)
    for language, chosen in sets.items():
        heard: dict[str, list[tuple[str, str]]] = {}
        for clip in chosen:
            phone = telephone(clip.audio(), 16000)
            pcm = _pcm(phone)
            heard.setdefault("whisper-base", []).append((clip.text, base.transcribe(pcm, 8000, language)))
            if language == "en":
                heard.setdefault("whisper-tiny.en", []).append((clip.text, tiny.transcribe(pcm, 8000, "en")))
                heard.setdefault("pocketsphinx", []).append((clip.text, sphinx.transcribe(pcm, 8000)))
            if len(examples) < 12 and heard["whisper-base"][-1][1].strip().lower() != clip.text.lower():
                examples.append({"language": language, "text": clip.text, "whisper-base": heard["whisper-base"][-1][1]})
            seconds = phone.size / 8000
            if seconds >= 1.0:
                short = _pcm(phone[: int(min(3.0, seconds) * 8000)])
                guess, _ = base.detect_language(short, 8000, candidates)
                lid_audio[language].append(guess == language)
                text = base.transcribe(short, 8000, guess or "en")
                by_text, _ = detect_language(detector, text) if text.strip() else ("", 0.0)
                lid_text[language].append(by_text == language)
        wer[language] = {name: _wer(pairs) for name, pairs in heard.items()}
    def rate(values: list[bool]) -> float | None:
        return round(sum(values) / len(values), 3) if values else None
    return {
        "speech": "human (pocketsphinx/LibriVox and Tux Paint recordings), 8 kHz μ-law",
        "clips": {language: len(chosen) for language, chosen in sets.items()},
        "wer": wer,
        "wer_whisper_base": {language: wer[language]["whisper-base"] for language in LANGUAGES},
        "lid_audio_accuracy": {language: rate(values) for language, values in lid_audio.items()},
        "lid_audio_accuracy_all": rate([v for values in lid_audio.values() for v in values]),
        "lid_text_accuracy": {language: rate(values) for language, values in lid_text.items()},
        "lid_text_accuracy_all": rate([v for values in lid_text.values() for v in values]),
        "examples": examples,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description="WER and language ID on human telephone speech")
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
