"""End of turn on human telephone-band speech: delay after a finished utterance, cut-offs at pauses.

Cases come from :mod:`benchmarks.corpus.turns` (human recordings, 8 kHz
μ-law over a quiet line): *finished* utterances followed by silence, and
sentences split by a 200-1200 ms pause at a word boundary. Each case runs
through the call's VAD and end-of-turn decision offline (:func:`aybiza.listen.listen`,
with the smart-turn model's real inference time on this machine). Compared
on the same audio:

* ``silence_400ms`` — the fixed silence the platform used before (the baseline);
* ``pipecat`` — smart-turn as pipecat ships it: its VAD's 200 ms stop, threshold
  0.5, 3 s of silence when the model says "not yet", no telephone calibration;
* ``fast``, ``balanced``, ``patient`` — our profiles (``end_of_turn`` in Settings), on the
  model's probability calibrated for the telephone band (:func:`aybiza.processors.endpoint.calibrated`);
* ``balanced+words`` — ``balanced`` reading the words so far at each pause
  (:mod:`aybiza.processors.turn_words`): the embedded recogniser's own decode of the
  turn's audio up to the pause (whisper tiny.en for English, base otherwise — what the
  call would hear, not the corpus's text), in hand at the decision, as a streaming
  recogniser's interims are (Deepgram's stand-in here: it cannot be reached; its
  decode time is reported beside, not added);
* ``balanced+exact_words`` — the same with the words actually said up to the pause (the
  corpus's alignment): a recogniser that hears every word, the bound of the text signal.
  The pause cases are cut after words a sentence goes on from (``CONTINUING``), a wider set
  than the product's (:data:`aybiza.processors.turn_words.OPEN_ENDINGS`): a pause after
  "in" or "to" is cut whatever the words, so the bound is not the corpus grading its own list.

The profiles were chosen on the cases of seed 7; this measures them on seed 11's
(other clips, other cut points; some clips recur).

Figures per configuration: end-of-turn delay p50/p95 after a finished
utterance (from the end of its last word to the decision), the cut-off rate
at mid-sentence pauses of 500-900 ms (and over all pauses), and finished
utterances cut before their end.

Run: ``.venv/bin/python -m benchmarks.endpoint [--quick]`` (prints the figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from aybiza.config import Settings
from aybiza.engines import Engines
from aybiza.listen import listen
from aybiza.processors.endpoint import PROFILES, EndOfTurnProfile
from aybiza.processors.smart_turn import SmartTurnModel
from benchmarks.corpus.fetch import cache_dir, have_tools
from benchmarks.corpus.score import percentile
from benchmarks.corpus.turns import TurnCase, turn_cases

__all__ = ["CONFIGS", "measure", "run"]

PIPECAT = EndOfTurnProfile("pipecat", stop_ms=200, threshold=0.5, max_silence_ms=3000, short_speech_ms=0)
CONFIGS: dict[str, EndOfTurnProfile | int] = {"silence_400ms": 400, "pipecat": PIPECAT, **PROFILES}
_EARLY_S = 0.1  # a turn end this long before the last word ends is a cut-off


def _pcm(case: TurnCase) -> bytes:
    return bytes(np.clip(np.round(case.audio * 32768), -32768, 32767).astype("<i2").tobytes())


Words = Callable[[TurnCase], Callable[[bytes, int, float], str]]
"""For a case: ``(turn audio so far, rate, speech end) -> text``, the words a recogniser has of it at a pause."""


def whisper_words(engines: Engines) -> Words:
    """What the embedded recogniser hears of the turn's audio so far (tiny.en for English, base otherwise)."""
    return lambda case: lambda pcm, rate, _at: engines.whisper(case.language).transcribe(pcm, rate, case.language)


def exact_words(case: TurnCase) -> Callable[[bytes, int, float], str]:
    """The words said up to the pause, as the corpus aligned them: a recogniser that hears every word (a bound)."""
    def words(_pcm: bytes, _rate: int, at: float) -> str:
        if case.pause is None or at <= case.pause[0] + 0.15:
            return case.said_before
        return ""  # after the pause: not known, the audio decides alone
    return words


def measure(cases: list[TurnCase], config: EndOfTurnProfile | int, score: Callable[[bytes, int], float],
            words: Words | None = None) -> dict[str, Any]:
    """Delays and cut-offs of one configuration (``score``: the turn scorer it uses) over the cases."""
    delays: list[float] = []
    cut_mid: list[bool] = []
    cut_all: list[bool] = []
    early_finished = 0
    inference: list[float] = []
    decode: list[float] = []
    for case in cases:
        if isinstance(config, int):
            heard = listen(_pcm(case), 8000, silence_ms=config)
        elif words is None:
            heard = listen(_pcm(case), 8000, profile=config, score=score)
        else:
            heard = listen(_pcm(case), 8000, profile=config, score=score, language=case.language,
                           words=words(case))
        inference += heard.inference_ms
        decode += [ms for _, _, ms in heard.words]
        ends = [end.at for end in heard.turn_ends]
        early = any(at < case.speech_end - _EARLY_S for at in ends)
        if case.pause is None:
            early_finished += early
            after = [at for at in ends if at >= case.speech_end - _EARLY_S]
            if after and not early:
                delays.append(max(0.0, after[0] - case.speech_end))
        else:
            cut_all.append(early)
            pause_ms = round((case.pause[1] - case.pause[0]) * 1000)
            if 500 <= pause_ms <= 900:
                cut_mid.append(early)
    finished = sum(case.pause is None for case in cases)
    return {
        "delay_ms_p50": _ms(percentile(delays, 50)),
        "delay_ms_p95": _ms(percentile(delays, 95)),
        "cutoff_rate_500_900ms": round(sum(cut_mid) / len(cut_mid), 3) if cut_mid else None,
        "cutoff_rate_all_pauses": round(sum(cut_all) / len(cut_all), 3) if cut_all else None,
        "finished_cut_early_rate": round(early_finished / finished, 3) if finished else None,
        "finished_cases": finished,
        "pause_cases_500_900ms": len(cut_mid),
        "pause_cases": len(cut_all),
        "inference_ms_p50": _ms((percentile(inference, 50) or 0) / 1000) if inference else None,
        **({"decode_ms_p50": _ms((percentile(decode, 50) or 0) / 1000),
            "decode_ms_p95": _ms((percentile(decode, 95) or 0) / 1000)} if decode else {}),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def run(quick: bool = False) -> dict[str, Any]:
    """Every configuration on the same human cases."""
    if not have_tools():
        return {"skipped": "needs sox, apt-get and dpkg-deb to fetch the human recordings"}
    started = time.perf_counter()
    cases = turn_cases(per_language=25 if quick else 60, seed=11)  # the profiles were chosen on seed 7's cases
    model = SmartTurnModel()
    model.load()
    results = {name: measure(cases, config, model.probability if name == "pipecat" else model.calibrated_probability)
               for name, config in CONFIGS.items()}
    engines = Engines(Settings(data_dir=cache_dir()))
    balanced = PROFILES["balanced"]
    results["balanced+words"] = measure(cases, balanced, model.calibrated_probability, whisper_words(engines))
    results["balanced+exact_words"] = measure(cases, balanced, model.calibrated_probability, exact_words)
    return {
        "speech": "human (LibriVox via pocketsphinx test data; Tux Paint stamp descriptions en/es/fr), 8 kHz μ-law",
        "cases": len(cases),
        "by_config": results,
        "balanced": results["balanced"],
        "balanced_words": results["balanced+words"],
        "balanced_exact_words": results["balanced+exact_words"],
        "baseline": results["silence_400ms"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description="end of turn on human telephone-band speech")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = run(args.quick)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
