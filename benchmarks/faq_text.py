"""FAQ matching on text: accuracy and time per question, against a word-overlap baseline.

Runs the embedded FAQ responder's matcher (all-MiniLM-L6-v2 in numpy) over
paraphrased questions for the default agent that are not among the agent's
own phrasings, and reports how often it picks the right FAQ, how often it
wrongly answers off-topic questions, and how long one question takes.

Two question sets: ``tuning`` (36) was looked at while writing the agent's
phrasings; ``held_out`` (36) was only used to choose the threshold and the
lexical weight, never to edit the FAQ. Usage::

    .venv/bin/python benchmarks/faq_text.py [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aybiza.agents import FAQ, AgentConfig, load_agent
from aybiza.processors.llm.embedding import SentenceEncoder
from aybiza.processors.llm.faq import FAQMatcher

__all__ = ["TUNING", "HELD_OUT", "OFF_TOPIC", "WordOverlapMatcher", "main"]

TUNING: list[tuple[str, str]] = [
    ("when do you open on monday", "opening_hours"),
    ("what are your hours on the weekend", "opening_hours"),
    ("till what time are you open today", "opening_hours"),
    ("where is your office", "location"),
    ("what's the address of the dental clinic", "location"),
    ("i'm trying to find you, what road are you on", "location"),
    ("is there a parking lot", "parking"),
    ("where do patients park", "parking"),
    ("can i leave my car outside the clinic", "parking"),
    ("how much for a checkup", "prices"),
    ("what's the cost of an exam", "prices"),
    ("how much will it cost me", "prices"),
    ("i'd like to come in for a cleaning", "book_appointment"),
    ("i want to book a visit with the dentist", "book_appointment"),
    ("do you have any free slots next week", "book_appointment"),
    ("i won't be able to come to my appointment", "cancel_appointment"),
    ("i need to change the time of my visit", "cancel_appointment"),
    ("what happens if i cancel late", "cancel_appointment"),
    ("do you accept debit cards", "payment_methods"),
    ("can i pay with apple pay", "payment_methods"),
    ("what forms of payment do you take", "payment_methods"),
    ("do you take cigna", "insurance"),
    ("does my dental plan cover this", "insurance"),
    ("do you bill my insurer directly", "insurance"),
    ("i'm in a lot of pain", "emergency"),
    ("my tooth got knocked out", "emergency"),
    ("it's urgent, i need a dentist right now", "emergency"),
    ("how do i get in touch with you", "contact"),
    ("what's the number for the front desk", "contact"),
    ("can i email the office", "contact"),
    ("i'd like to join the practice as a new patient", "new_patients"),
    ("what should i bring to my first appointment", "new_patients"),
    ("do you have room for new patients", "new_patients"),
    ("do you do children's dentistry", "children"),
    ("can my toddler be seen", "children"),
    ("is the dentist good with nervous kids", "children"),
]

HELD_OUT: list[tuple[str, str]] = [
    ("is the office open late on thursdays", "opening_hours"),
    ("what's your schedule this saturday", "opening_hours"),
    ("hi um are you guys closed on bank holidays", "opening_hours"),
    ("which town are you in", "location"),
    ("are you near the ferry", "location"),
    ("what's the post code for the surgery", "location"),
    ("is there disabled parking", "parking"),
    ("is there a garage or street parking nearby", "parking"),
    ("can i part my car at the dentist", "parking"),
    ("how much do x rays cost", "prices"),
    ("is a cleaning expensive", "prices"),
    ("what do you charge for a kids checkup", "children"),
    ("can i get an appointment on wednesday afternoon", "book_appointment"),
    ("i'd like to see doctor smith next week", "book_appointment"),
    ("when is the next available appointment", "book_appointment"),
    ("i'm sick and cant come tomorrow", "cancel_appointment"),
    ("please cancel my booking", "cancel_appointment"),
    ("how much notice do you need to cancel", "cancel_appointment"),
    ("do you accept american express", "payment_methods"),
    ("can i spread the cost over a few months", "payment_methods"),
    ("is it okay to pay cash", "payment_methods"),
    ("are you covered by metlife", "insurance"),
    ("i have a insurance through work will that work", "insurance"),
    ("do you take medicaid", "insurance"),
    ("my filling fell out and it really hurts", "emergency"),
    ("there's blood and my gum is swollen", "emergency"),
    ("who can i call on the weekend for a toothache", "emergency"),
    ("can i talk to someone at reception", "speak_to_person"),  # "contact" before that FAQ existed
    ("give me your telephone number please", "contact"),
    ("what's the best way to reach you", "contact"),
    ("how do i sign up as a patient", "new_patients"),
    ("is there paperwork for my first visit", "new_patients"),
    ("i just moved to the area and need a new dentist", "new_patients"),
    ("what age should my baby first see a dentist", "children"),
    ("do you look after teenagers", "children"),
    ("my kid needs a check up", "children"),
]

OFF_TOPIC: list[str] = [
    "purple elephant banana",
    "the weather is lovely today",
    "who won the football last night",
    "tell me a joke",
    "can you recommend a good pizza place",
    "what's the capital of france",
    "play some music",
    "i want to buy a bicycle",
    "okay thanks bye",
    "my cat is orange",
]

_WORD = re.compile(r"[a-z0-9']+")
_STOP = frozenset(
    "a an the i you your we our to of in on at for is are do does can could would will my me it "
    "what how when where which who there this that and or be have with if any".split()
)


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


class WordOverlapMatcher:
    """Baseline: the FAQ whose phrasing shares the most words (Jaccard, stop words removed)."""

    def __init__(self, agent: AgentConfig) -> None:
        self._phrasings = [(faq, _words(q)) for faq in agent.faqs for q in faq.questions]

    def match(self, text: str) -> tuple[str | None, float]:
        """FAQ id with the best overlap, or None when no content word is shared."""
        words = _words(text)
        best_id: str | None = None
        best = 0.0
        for faq, phrasing in self._phrasings:
            union = words | phrasing
            score = len(words & phrasing) / len(union) if union else 0.0
            if score > best:
                best_id, best = faq.id, score
        return best_id, best


Matcher = Callable[[str], tuple[FAQ | str | None, float]]


def _evaluate(match: Matcher, questions: list[tuple[str, str]], off_topic: list[str]) -> dict[str, float]:
    def faq_id(text: str) -> str | None:
        found = match(text)[0]
        return found.id if isinstance(found, FAQ) else found

    latencies: list[float] = []
    correct = 0
    for text, expected in questions:
        started = time.perf_counter()
        got = faq_id(text)
        latencies.append(time.perf_counter() - started)
        correct += got == expected
    fallbacks = sum(faq_id(text) is None for text in off_topic)
    latencies.sort()
    return {
        "accuracy": correct / len(questions),
        "correct": correct,
        "questions": len(questions),
        "off_topic_fallback": fallbacks / len(off_topic),
        "median_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--agents", type=Path, default=Path(__file__).resolve().parents[1] / "agents")
    args = parser.parse_args(argv)

    agent = load_agent("default", args.agents)
    started = time.perf_counter()
    encoder = SentenceEncoder.packaged()
    load_s = time.perf_counter() - started
    phrasing_count = sum(len(faq.questions) for faq in agent.faqs)
    started = time.perf_counter()
    semantic = FAQMatcher(agent, encoder)
    precompute_s = time.perf_counter() - started
    plain = FAQMatcher(agent, encoder, lexical_weight=0.0)
    overlap = WordOverlapMatcher(agent)
    encoder.encode(["warm up"])

    results: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, questions in (("tuning", TUNING), ("held_out", HELD_OUT)):
        results[set_name] = {
            "minilm+lexical": _evaluate(semantic.match, questions, OFF_TOPIC),
            "minilm": _evaluate(plain.match, questions, OFF_TOPIC),
            "word_overlap": _evaluate(overlap.match, questions, OFF_TOPIC),
        }
    summary = {
        "agent": agent.id,
        "faqs": len(agent.faqs),
        "phrasings": phrasing_count,
        "threshold": agent.match_threshold,
        "encoder_load_s": load_s,
        "phrasing_precompute_s": precompute_s,
        "results": results,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"agent {agent.id}: {len(agent.faqs)} FAQs, {phrasing_count} phrasings, "
        f"threshold {agent.match_threshold}; encoder load {load_s:.2f} s (incl. hash check), "
        f"phrasings embedded in {precompute_s:.2f} s"
    )
    header = ("set", "matcher", "accuracy", "off-topic→fallback", "median ms", "p95 ms")
    print("{:9} {:15} {:>14} {:>19} {:>10} {:>8}".format(*header))
    for set_name, by_matcher in results.items():
        for name, r in by_matcher.items():
            print(
                f"{set_name:9} {name:15} {r['accuracy']:7.1%} ({r['correct']:.0f}/{r['questions']:.0f})"
                f" {r['off_topic_fallback']:18.0%} {r['median_ms']:10.2f} {r['p95_ms']:8.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
