"""Spoken FAQ with the confirmation band: how often the caller gets the right answer, a wrong one, or is asked.

The questions are ``benchmarks/faq_spoken.py``'s evaluation set (written
before any tuning) and its off-topic questions, spoken by espeak-ng
(synthetic: no human recording asks a dental practice anything), passed
through 8 kHz μ-law and transcribed by whisper tiny.en; the default agent's
matcher scores them. Each question ends one of five ways under the
responder's rules (:mod:`aybiza.processors.llm.faq`): ``answered_right``,
``answered_wrong``, ``asked_right`` ("Did you mean ...?" about the right
FAQ: a "yes" gets the answer), ``asked_wrong``, ``fallback``. Without the
band (``confirm_band = 0``) the asked ones would have been fallbacks.

Figures: accuracy with the band (answered right + asked right, over the
FAQ questions), without it, confidently wrong answers, off-topic questions
answered (should be 0).

Run: ``.venv/bin/python -m benchmarks.faq_confirm [--quick]`` (prints the figures).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import shutil
import time
from typing import Any

from aybiza.agents import load_agent
from aybiza.codecs import ulaw2lin
from aybiza.processors.llm.embedding import SentenceEncoder
from aybiza.processors.llm.faq import FAQMatcher
from aybiza.processors.stt.whisper import WhisperRecognizer
from aybiza.testing.caller import caller_speech
from benchmarks.faq_spoken import EVALUATION, OFF_TOPIC_EVALUATION

__all__ = ["run"]

ROOT = Path(__file__).resolve().parents[1]


def outcome(faq_id: str | None, score: float, expected: str | None, threshold: float, band: float) -> str:
    """How the responder ends a question (a high-quality line)."""
    if faq_id is None or score < threshold - band:
        return "fallback"
    right = faq_id == expected
    if score >= threshold:
        return "answered_right" if right else "answered_wrong"
    return "asked_right" if right else "asked_wrong"


def run(quick: bool = False) -> dict[str, Any]:
    """Speak, recognise, match; count the outcomes with and without the band."""
    if shutil.which("espeak-ng") is None:
        return {"skipped": "espeak-ng is not installed"}
    started = time.perf_counter()
    agent = load_agent("default", ROOT / "agents")
    matcher = FAQMatcher(agent, SentenceEncoder.packaged())
    recognizer = WhisperRecognizer(beam_size=5)
    questions: list[tuple[str, str | None]] = [*EVALUATION, *((q, None) for q in OFF_TOPIC_EVALUATION)]
    if quick:
        questions = questions[::3]
    rows = []
    for text, expected in questions:
        heard = recognizer.transcribe(ulaw2lin(caller_speech(text)), 8000)
        faq, score = matcher.closest(heard)
        rows.append({"text": text, "heard": heard, "expected": expected, "faq": faq.id if faq else None,
                     "score": round(score, 3)})
    counts: dict[str, dict[str, int]] = {}
    for label, band in (("with_band", agent.confirm_band), ("without_band", 0.0)):
        tally: dict[str, int] = {}
        for row in rows:
            if row["expected"] is None:
                continue
            kind = outcome(row["faq"], row["score"], row["expected"], agent.match_threshold, band)
            tally[kind] = tally.get(kind, 0) + 1
        counts[label] = tally
    on_topic = sum(1 for row in rows if row["expected"] is not None)
    off_topic = [row for row in rows if row["expected"] is None]
    with_band = counts["with_band"]
    return {
        "speech": "synthetic (espeak-ng), 8 kHz μ-law, whisper tiny.en",
        "questions": on_topic,
        "off_topic_questions": len(off_topic),
        "outcomes": counts,
        "accuracy_with_band": round((with_band.get("answered_right", 0) + with_band.get("asked_right", 0))
                                    / on_topic, 3),
        "accuracy_without_band": round(counts["without_band"].get("answered_right", 0) / on_topic, 3),
        "answered_wrong_rate": round(with_band.get("answered_wrong", 0) / on_topic, 3),
        "off_topic_answered": sum(1 for row in off_topic if row["score"] >= agent.match_threshold),
        "off_topic_asked": sum(1 for row in off_topic
                               if agent.match_threshold - agent.confirm_band <= row["score"] < agent.match_threshold),
        "asked": [row for row in rows if agent.match_threshold - agent.confirm_band <= row["score"]
                  < agent.match_threshold][:10],
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description="spoken FAQ with the confirmation band")
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
