"""FAQ answering on spoken questions: telephone-band speech → whisper tiny.en → FAQ matcher.

Each question is spoken by espeak-ng (four voices at 150-175 wpm), flite
(kal, slt) and piper (joe, a neural voice: the nearest thing to a person
here; reported apart as well), resampled to 8 kHz and passed through G.711 μ-law and back (the
telephone band of a Twilio media stream), transcribed by the
embedded :class:`~aybiza.processors.stt.whisper.WhisperRecognizer` and matched
by the default agent's :class:`~aybiza.processors.llm.faq.FAQMatcher` on the packaged sentence encoder.
It reports how often the right FAQ is answered (per voice and overall), how
often off-topic questions get the fallback, word error rates with examples of
misrecognitions, and the time per question.

Question sets (see ``SETS``):

* ``tuning`` — ``faq_text.TUNING`` plus ``TUNING_EXTRA``: looked at, question
  by question, while writing the agent's phrasings and the matcher's ASR fixes.
* ``held_out`` — ``faq_text.HELD_OUT``: only its totals were used to accept or
  reject a change (its questions were in sight, so the phrasings avoid echoing them).
* ``evaluation`` — ``EVALUATION``: written before any tuning and before the
  first recognition run; scored only before and after the work, never tuned on.

Off-topic questions are split the same way. ``text_accuracy`` is the matcher
on the written question (no speech), to tell recognition losses from matching ones.

The full run speaks every set in every voice (about 15 minutes on 2 cores);
``--quick`` speaks the held-out and evaluation sets once, the voices taking
turns (about a minute). Whisper may fall back to sampling on a garbled
utterance, so two runs can differ by a transcript or two.

Run: ``.venv/bin/python benchmarks/faq_spoken.py [--quick] [--save-transcripts F | --from-transcripts F]``
(prints the figures).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import wave
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import numpy as np

from aybiza.agents import AgentConfig, load_agent
from aybiza.codecs import lin2ulaw, resample, ulaw2lin
from aybiza.processors.llm.embedding import SentenceEncoder
from aybiza.processors.llm.faq import FAQMatcher
from aybiza.processors.stt.whisper import WhisperRecognizer
from aybiza.processors.tts.piper import PiperSynthesizer
from benchmarks.faq_text import HELD_OUT, OFF_TOPIC, TUNING

__all__ = [
    "EVALUATION",
    "OFF_TOPIC_EVALUATION",
    "OFF_TOPIC_TUNING",
    "TUNING_EXTRA",
    "SETS",
    "VOICES",
    "ROBOTIC",
    "Heard",
    "Spoken",
    "Voice",
    "hear",
    "plan",
    "run",
    "score",
    "telephone_pcm",
    "word_errors",
]

AGENTS = Path(__file__).resolve().parents[1] / "agents"
RATE = 8000

# Written before the first recognition run and before any tuning; never tuned on.
EVALUATION: list[tuple[str, str]] = [
    ("hi there what time do you open tomorrow morning", "opening_hours"),
    ("are you open on sundays at all", "opening_hours"),
    ("i was wondering if you're open over lunch", "opening_hours"),
    ("what time does the practice shut on a friday", "opening_hours"),
    ("could you tell me where the practice is", "location"),
    ("i'm coming from the train station, how do i get to you", "location"),
    ("is it the clinic by the library", "location"),
    ("what's the street address, i need it for my sat nav", "location"),
    ("will i be able to park when i come in", "parking"),
    ("do i need to pay for parking at your place", "parking"),
    ("where's the entrance to your car park", "parking"),
    ("is there anywhere to put the car", "parking"),
    ("roughly how much is a filling", "prices"),
    ("what would i pay for a scale and polish", "prices"),
    ("can you give me an idea of the cost of a new patient exam", "prices"),
    ("how much are your check ups if i don't have insurance", "prices"),
    ("hello i'd like to make a booking please", "book_appointment"),
    ("could i come in sometime on friday morning", "book_appointment"),
    ("do you have anything available tomorrow", "book_appointment"),
    ("i need a check up, can you fit me in", "book_appointment"),
    ("i've got an appointment on tuesday but something's come up", "cancel_appointment"),
    ("can we push my appointment back a week", "cancel_appointment"),
    ("is there a charge if i miss my appointment", "cancel_appointment"),
    ("i need to cancel tomorrow's cleaning", "cancel_appointment"),
    ("can i pay with my phone", "payment_methods"),
    ("do you take cheques", "payment_methods"),
    ("can i pay a bit each month", "payment_methods"),
    ("what cards do you take", "payment_methods"),
    ("do you work with aetna", "insurance"),
    ("i'm with blue cross, is that okay", "insurance"),
    ("will you send the claim to my insurance company", "insurance"),
    ("how do i know if my plan covers a filling", "insurance"),
    ("i cracked a tooth eating and it's really sore", "emergency"),
    ("my whole jaw is throbbing and i can't sleep", "emergency"),
    ("i fell and knocked my front tooth loose", "emergency"),
    ("who do i call if it's the middle of the night and i'm in agony", "emergency"),
    ("what's the phone number for the practice", "contact"),
    ("is there an email i can write to", "contact"),
    ("how can i get hold of someone there", "contact"),
    ("can i speak to a real person", "speak_to_person"),  # "contact" before that FAQ existed
    ("i'm not registered with you yet, can i join", "new_patients"),
    ("do i need to fill in any forms before my first appointment", "new_patients"),
    ("we've just moved here, is your practice open to new families", "new_patients"),
    ("what id do i need for my first visit", "new_patients"),
    ("do you see little ones", "children"),
    ("my daughter's five, is she too young for a check up", "children"),
    ("is there a dentist who's good with children", "children"),
    ("how much is a check up for my son", "children"),
]

OFF_TOPIC_EVALUATION: list[str] = [
    "is this the pharmacy",
    "sorry i think i have the wrong number",
    "what's the weather going to be like tomorrow",
    "i'd like to order a large pepperoni pizza",
    "how do i reset my internet router",
    "my flight has been cancelled and i need a refund",
    "i'm calling about my car insurance renewal",
    "who's playing in the match tonight",
    "do you sell garden furniture",
    "what's a good recipe for banana bread",
    "can you tell me a bedtime story",
    "how many miles is it to london",
]

# Looked at while tuning (with faq_text.TUNING).
TUNING_EXTRA: list[tuple[str, str]] = [
    ("do you open early", "opening_hours"),
    ("what are your hours on a friday", "opening_hours"),
    ("are you open at lunchtime on saturday", "opening_hours"),
    ("where exactly are you", "location"),
    ("what part of town is the practice in", "location"),
    ("how do i get there from the high street", "location"),
    ("is it easy to park", "parking"),
    ("do you have a parking space for patients", "parking"),
    ("can i park for free", "parking"),
    ("how much do you charge", "prices"),
    ("what's the price of a filling", "prices"),
    ("how much is a new patient exam", "prices"),
    ("can i book in for a check up", "book_appointment"),
    ("i'd like to arrange an appointment", "book_appointment"),
    ("when can i come in", "book_appointment"),
    ("i need to rearrange my appointment", "cancel_appointment"),
    ("i can't make thursday", "cancel_appointment"),
    ("is there a late cancellation fee", "cancel_appointment"),
    ("can i pay by card", "payment_methods"),
    ("do you take google pay", "payment_methods"),
    ("can i pay monthly", "payment_methods"),
    ("do you take delta dental insurance", "insurance"),
    ("is my insurance accepted here", "insurance"),
    ("can you bill my insurance", "insurance"),
    ("my tooth is broken", "emergency"),
    ("i've got terrible toothache", "emergency"),
    ("my gum is bleeding a lot", "emergency"),
    ("what's your number", "contact"),
    ("how do i contact the receptionist", "contact"),
    ("what's your email", "contact"),
    ("i'd like to register as a new patient", "new_patients"),
    ("do you accept new patients", "new_patients"),
    ("what do i need for my first appointment", "new_patients"),
    ("do you treat kids", "children"),
    ("can my son see the dentist", "children"),
    ("do you have a children's dentist", "children"),
    # A second batch, written after the first tuning round to find gaps in the phrasings.
    ("what time do you finish today", "opening_hours"),
    ("are you open christmas eve", "opening_hours"),
    ("are you open before nine", "opening_hours"),
    ("what's the nearest bus stop to you", "location"),
    ("are you still on harbor lane", "location"),
    ("can you send me directions to the surgery", "location"),
    ("will i get a parking ticket outside", "parking"),
    ("is the car park big", "parking"),
    ("how much would a crown be", "prices"),
    ("what's the fee for a filling", "prices"),
    ("i'd like to sort out a check up for next month", "book_appointment"),
    ("could you squeeze me in on monday afternoon", "book_appointment"),
    ("i'd like a hygienist appointment", "book_appointment"),
    ("i won't make it today", "cancel_appointment"),
    ("i'm going to be away so i need a new date", "cancel_appointment"),
    ("can i put my appointment off", "cancel_appointment"),
    ("can i pay on my credit card over the phone", "payment_methods"),
    ("do you do zero percent finance", "payment_methods"),
    ("does delta cover cleanings at your office", "insurance"),
    ("i'm on my husband's dental plan", "insurance"),
    ("my crown came off", "emergency"),
    ("my wisdom tooth is really painful", "emergency"),
    ("is there anyone i can speak to", "speak_to_person"),  # "contact" before that FAQ existed
    ("what's your email address again", "contact"),
    ("i want to switch to your practice", "new_patients"),
    ("how do i become a patient", "new_patients"),
    ("my son has a wobbly tooth, do you see kids his age", "children"),
    ("do you do fluoride for children", "children"),
]

OFF_TOPIC_TUNING: list[str] = [
    "hello",
    "can i order a taxi",
    "what time is it in new york",
    "i'd like to speak to the bank about my mortgage",
    "have you seen my dog",
    "do you fix laptops",
]

SETS: dict[str, tuple[list[tuple[str, str]], list[str]]] = {
    "tuning": (TUNING + TUNING_EXTRA, OFF_TOPIC_TUNING),
    "held_out": (HELD_OUT, OFF_TOPIC),
    "evaluation": (EVALUATION, OFF_TOPIC_EVALUATION),
}
"""Set name -> (questions with the expected FAQ id, off-topic questions that should get the fallback)."""


@dataclass(frozen=True, slots=True)
class Voice:
    """A synthetic caller: ``engine`` (espeak-ng, flite or piper), its voice name and, for espeak-ng, wpm."""

    engine: str
    name: str
    wpm: int = 0

    @property
    def label(self) -> str:
        """Short name used in the report, e.g. ``espeak:en-us+f3@170``."""
        return f"espeak:{self.name}@{self.wpm}" if self.engine == "espeak-ng" else f"{self.engine}:{self.name}"


VOICES: tuple[Voice, ...] = (
    Voice("espeak-ng", "en-us", 160),
    Voice("espeak-ng", "en-gb", 150),
    Voice("espeak-ng", "en-us+f3", 170),
    Voice("espeak-ng", "en-us+m3", 175),
    Voice("flite", "kal"),
    Voice("flite", "slt"),
    Voice("piper", "joe"),
)
"""espeak-ng and flite as the brief asks; piper (a neural voice, the nearest to a person here) as a check."""

ROBOTIC = frozenset(v.label for v in VOICES if v.engine != "piper")


def _synthesise(voice: Voice, text: str) -> tuple[np.ndarray[Any, np.dtype[np.float64]], int]:
    if voice.engine == "piper":
        chunks = list(_piper().synthesize(text, "en"))
        pcm = b"".join(chunk for chunk, _ in chunks)
        return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0, chunks[0][1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        if voice.engine == "espeak-ng":
            command = ["espeak-ng", "-v", voice.name, "-s", str(voice.wpm), "-w", str(path), text]
        else:
            command = ["flite", "-voice", voice.name, "-t", text, "-o", str(path)]
        subprocess.run(command, check=True, capture_output=True)
        with wave.open(str(path)) as wav:
            rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return samples.astype(np.float64) / 32768.0, rate


@cache
def _piper() -> PiperSynthesizer:
    return PiperSynthesizer(first_clause_words=None)


def telephone_pcm(voice: Voice, text: str) -> bytes:
    """``text`` spoken by ``voice`` as a phone line delivers it: 8 kHz through μ-law and back, as PCM16."""
    signal, rate = _synthesise(voice, text)
    pcm = np.clip(np.round(signal * 32768), -32768, 32767).astype("<i2").tobytes()
    return ulaw2lin(lin2ulaw(resample(pcm, rate, RATE)))


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("-", " "))


def word_errors(said: str, heard: str) -> tuple[int, int]:
    """Word-level edit distance between ``said`` and ``heard`` (case and punctuation ignored), and len(said)."""
    ref, hyp = _tokens(said), _tokens(heard)
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        current = [i]
        for j, other in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return previous[-1], len(ref)


@dataclass(frozen=True, slots=True)
class Heard:
    """One spoken question: what was said, by whom, what whisper heard and how long it took."""

    set: str
    voice: str
    said: str
    expected: str | None  # None: off-topic, the fallback is right
    heard: str
    audio_s: float
    stt_s: float


Spoken = tuple[str, str, str | None, Voice]
"""One question to speak: (set name, text, expected FAQ id or None for off-topic, voice)."""


def plan(set_names: Iterable[str], voices: Sequence[Voice], rotate: bool = False) -> list[Spoken]:
    """Every question of the sets in every voice, or (``rotate``) each in one voice, taking turns."""
    items: list[tuple[str, str, str | None]] = []
    for set_name in set_names:
        questions, off_topic = SETS[set_name]
        items += [(set_name, text, expected) for text, expected in questions]
        items += [(set_name, text, None) for text in off_topic]
    if rotate:
        return [(s, text, expected, voices[i % len(voices)]) for i, (s, text, expected) in enumerate(items)]
    return [(s, text, expected, voice) for s, text, expected in items for voice in voices]


def hear(spoken: Iterable[Spoken], recognizer: WhisperRecognizer) -> list[Heard]:
    """Speak each question over the telephone band and transcribe it (blocking)."""
    out: list[Heard] = []
    for set_name, text, expected, voice in spoken:
        pcm = telephone_pcm(voice, text)
        started = time.perf_counter()
        heard = recognizer.transcribe(pcm, RATE, "en")
        seconds = time.perf_counter() - started
        out.append(Heard(set_name, voice.label, text, expected, heard, len(pcm) / (2 * RATE), seconds))
    return out


def _percent(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1),
    }


def _summary(rows: list[dict[str, Any]], written: dict[str, str | None]) -> dict[str, Any]:
    questions = [r for r in rows if r["expected"] is not None]
    off = [r for r in rows if r["expected"] is None]
    distinct = {r["said"]: r["expected"] for r in questions}
    distinct_off = {r["said"] for r in off}
    return {
        "questions": len(questions),
        "accuracy": _percent(sum(r["got"] == r["expected"] for r in questions), len(questions)),
        "wrong_faq": _percent(sum(r["got"] not in (None, r["expected"]) for r in questions), len(questions)),
        "fallback_on_question": _percent(sum(r["got"] is None for r in questions), len(questions)),
        "text_accuracy": _percent(sum(written[s] == e for s, e in distinct.items()), len(distinct)),
        "off_topic": len(off),
        "off_topic_fallback": _percent(sum(r["got"] is None for r in off), len(off)),
        "off_topic_text_fallback": _percent(sum(written[s] is None for s in distinct_off), len(distinct_off)),
        "wer": _percent(sum(r["errors"] for r in rows), sum(r["words"] for r in rows)),
    }


def score(heard: Sequence[Heard], matcher: FAQMatcher) -> dict[str, Any]:
    """Match every transcript (and every written question, for ``text_accuracy``); summarise per set and voice.

    Each set has ``all`` (every voice), ``espeak_flite`` (the voices the issue asks
    for), ``piper`` and ``per_voice`` rows: accuracy (right FAQ), wrong FAQ and
    fallback rates on questions, off-topic fallback rate, word error rate.
    """
    rows: list[dict[str, Any]] = []
    written: dict[str, str | None] = {}
    for item in heard:
        started = time.perf_counter()
        faq, match_score = matcher.match(item.heard)
        match_s = time.perf_counter() - started
        if item.said not in written:
            faq_for_text = matcher.match(item.said)[0]
            written[item.said] = faq_for_text.id if faq_for_text else None
        errors, words = word_errors(item.said, item.heard)
        got = faq.id if faq else None
        rows.append({**asdict(item), "got": got, "score": round(match_score, 3), "match_s": match_s})
        rows[-1].update(errors=errors, words=words)

    by_set: dict[str, Any] = {}
    for set_name in dict.fromkeys(r["set"] for r in rows):
        in_set = [r for r in rows if r["set"] == set_name]
        groups = {
            "all": in_set,
            "espeak_flite": [r for r in in_set if r["voice"] in ROBOTIC],
            "piper": [r for r in in_set if r["voice"] not in ROBOTIC],
        }
        by_set[set_name] = {name: _summary(group, written) for name, group in groups.items() if group}
        by_set[set_name]["per_voice"] = {
            voice: _summary([r for r in in_set if r["voice"] == voice], written)
            for voice in dict.fromkeys(r["voice"] for r in in_set)
        }
    keys = ("set", "voice", "said", "heard", "expected", "got", "score", "errors", "words")
    misses = sorted((r for r in rows if r["got"] != r["expected"]), key=lambda r: (r["set"], r["said"], r["voice"]))
    worst_heard = sorted(rows, key=lambda r: -r["errors"] / max(1, r["words"]))[:20]
    return {
        "sets": by_set,
        "timing": {
            "stt": _ms([r["stt_s"] for r in rows]),
            "match": _ms([r["match_s"] for r in rows]),
            "question_total": _ms([r["stt_s"] + r["match_s"] for r in rows]),
            "audio_s_median": round(statistics.median(r["audio_s"] for r in rows), 2),
            "stt_real_time_factor": round(sum(r["stt_s"] for r in rows) / sum(r["audio_s"] for r in rows), 3),
        },
        "misses": [{k: r[k] for k in keys} for r in misses],
        "worst_recognised": [{k: r[k] for k in keys} for r in worst_heard],
    }


def run(quick: bool = False, agent: AgentConfig | None = None, heard: Sequence[Heard] | None = None) -> dict[str, Any]:
    """Speak, transcribe and match the question sets; returns the JSON-able result.

    ``quick``: the held-out and evaluation sets, each question in one voice (the
    voices take turns), about a minute. ``heard``: score these transcripts instead
    of speaking (e.g. saved with ``--save-transcripts``), to try a matcher change cheaply.
    """
    return _run(quick, agent, heard)[0]


def _run(
    quick: bool, agent: AgentConfig | None, heard: Sequence[Heard] | None
) -> tuple[dict[str, Any], Sequence[Heard]]:
    started = time.perf_counter()
    agent = agent if agent is not None else load_agent("default", AGENTS)
    matcher = FAQMatcher(agent, SentenceEncoder.packaged())
    if heard is None:
        missing = [tool for tool in ("espeak-ng", "flite") if shutil.which(tool) is None]
        if missing:
            return {"benchmark": "faq_spoken", "skipped": f"not installed: {', '.join(missing)}"}, []
        recognizer = WhisperRecognizer()
        recognizer.load()
        set_names = ("held_out", "evaluation") if quick else tuple(SETS)
        heard = hear(plan(set_names, VOICES, rotate=quick), recognizer)
    result = score(heard, matcher)
    summary = {
        "benchmark": "faq_spoken",
        "quick": quick,
        "agent": agent.id,
        "faqs": len(agent.faqs),
        "phrasings": sum(len(faq.questions) for faq in agent.faqs),
        "threshold": agent.match_threshold,
        "lexical_weight": matcher.lexical_weight,
        "voices": sorted({h.voice for h in heard}),
        "spoken_questions": len(heard),
        "goal_accuracy": 90.0,
        "headline": {
            name: {
                group: {k: table[group][k] for k in ("accuracy", "off_topic_fallback", "text_accuracy")}
                for group in ("all", "espeak_flite", "piper")
                if group in table
            }
            for name, table in result["sets"].items()
        },
        **result,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return summary, heard


def _print(result: dict[str, Any]) -> None:
    if "skipped" in result:
        print(f"skipped: {result['skipped']}")
        return
    print(
        f"agent {result['agent']}: {result['faqs']} FAQs, {result['phrasings']} phrasings, threshold "
        f"{result['threshold']}, lexical weight {result['lexical_weight']}; {result['spoken_questions']} "
        f"spoken questions in {result['seconds']} s"
    )
    columns = ("accuracy", "wrong_faq", "fallback_on_question", "text_accuracy", "off_topic_fallback", "wer")
    print("{:11} {:20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}".format("set", "voice", "right%", "wrong%",
          "fallbk%", "text%", "off→fb%", "WER%"))  # fmt: skip
    for set_name, table in result["sets"].items():
        rows = {**table["per_voice"], **{k.upper(): v for k, v in table.items() if k != "per_voice"}}
        for voice, row in rows.items():
            cells = ["-" if row[k] is None else f"{row[k]:.1f}" for k in columns]
            print(f"{set_name:11} {voice:20} " + " ".join(f"{c:>8}" for c in cells[:5]) + f" {cells[5]:>6}")
    timing = result["timing"]
    print(
        f"per question: STT median {timing['stt']['median_ms']} ms (p95 {timing['stt']['p95_ms']}), "
        f"match median {timing['match']['median_ms']} ms (p95 {timing['match']['p95_ms']}); "
        f"audio median {timing['audio_s_median']} s, STT real-time factor {timing['stt_real_time_factor']}"
    )
    print("misses (said -> heard: expected/got score):")
    for miss in result["misses"]:
        print(
            f"  [{miss['set']}/{miss['voice']}] {miss['said']!r} -> {miss['heard']!r}: "
            f"{miss['expected']}/{miss['got']} {miss['score']}"
        )


def main() -> None:
    """Run standalone, print a table and write the JSON result."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="held-out and evaluation sets, one voice per question")
    parser.add_argument("--save-transcripts", type=Path, help="also write what whisper heard to this JSON file")
    parser.add_argument("--from-transcripts", type=Path, help="score saved transcripts instead of speaking")
    args = parser.parse_args()
    saved = None
    if args.from_transcripts:
        saved = [Heard(**item) for item in json.loads(args.from_transcripts.read_text())]
    result, heard = _run(args.quick, None, saved)
    if args.save_transcripts:
        args.save_transcripts.write_text(json.dumps([asdict(h) for h in heard], indent=1) + "\n")
    _print(result)


if __name__ == "__main__":
    main()
