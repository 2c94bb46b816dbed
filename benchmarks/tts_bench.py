"""Embedded TTS engines: time to first chunk and real-time factor, per engine and sentence.

Run: ``.venv/bin/python benchmarks/tts_bench.py [--repeat 5]``

For each engine it prints the median over ``--repeat`` runs of: time to the
first chunk (what the caller waits for), total synthesis time, seconds of
audio, and the real-time factor (synthesis time / audio time; below 1 is
faster than real time). Piper's one-off model load is timed separately, and
the last table measures first audio through ``TTSProcessor`` (AgentText in,
first OutputAudio out), which adds the thread hand-off to the engine's own
first-chunk time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import anyio

from aybiza.errors import ConfigError
from aybiza.pipeline.context import CallContext
from aybiza.pipeline.frames import AgentText, Frame, OutputAudio
from aybiza.processors.tts.base import SpeechSynthesizer, TTSProcessor
from aybiza.processors.tts.espeak import EspeakSynthesizer
from aybiza.processors.tts.flite import FliteSynthesizer
from aybiza.processors.tts.piper import PiperSynthesizer

__all__ = ["main"]

ENGLISH = [
    "Hello, we are open from nine to five.",
    "Your appointment is confirmed for Tuesday at three thirty in the afternoon.",
    "I can help with that; could you tell me the account number, please?",
    "Sure.",
]
GERMAN = [
    "Guten Tag, wir haben von neun bis fünf Uhr geöffnet.",
    "Ihr Termin ist für Dienstag um halb vier bestätigt.",
]


@dataclass(frozen=True, slots=True)
class Sample:
    """One synthesis: seconds to the first chunk, seconds in total, seconds of audio."""

    first: float
    total: float
    audio: float


def measure(engine: SpeechSynthesizer, text: str, language: str) -> Sample:
    """Synthesize once, timing the first chunk and the whole."""
    started = time.perf_counter()
    first = 0.0
    audio = 0.0
    for pcm, rate in engine.synthesize(text, language):
        if first == 0.0:
            first = time.perf_counter() - started
        audio += len(pcm) / 2 / rate
    return Sample(first, time.perf_counter() - started, audio)


def report(label: str, engine: SpeechSynthesizer, texts: list[str], language: str, repeat: int) -> None:
    """Print one line per text: medians of ``repeat`` runs."""
    for text in texts:
        runs = [measure(engine, text, language) for _ in range(repeat)]
        first = statistics.median(r.first for r in runs)
        total = statistics.median(r.total for r in runs)
        audio = statistics.median(r.audio for r in runs)
        shown = text if len(text) <= 40 else text[:37] + "..."
        timings = f"{first * 1000:>8.1f} {total * 1000:>9.1f} {audio:>7.2f} {total / audio:>6.3f}"
        print(f"{label:<14} {shown:<41} {timings}")


async def processor_first_audio(engine: SpeechSynthesizer, text: str, repeat: int) -> list[float]:
    """AgentText into TTSProcessor -> first OutputAudio out, ``repeat`` times (one turn each)."""
    samples: list[float] = []
    arrived = anyio.Event()

    async def sink(frame: Frame) -> None:
        if isinstance(frame, OutputAudio) and not arrived.is_set():
            samples.append(time.perf_counter() - sent_at)
            arrived.set()

    tts = TTSProcessor(engine)
    tts.push = sink
    async with anyio.create_task_group() as tg:
        await tts.start(CallContext(call_id="bench"), tg)
        for turn in range(repeat):
            arrived = anyio.Event()
            sent_at = time.perf_counter()
            await tts.process(AgentText(text, turn))
            await arrived.wait()
            await anyio.sleep(0.3)  # let the rest of the turn finish before the next sample
        tg.cancel_scope.cancel()
    await tts.stop()
    return samples


def optional(build: Callable[[], SpeechSynthesizer]) -> SpeechSynthesizer | None:
    """Build an engine, or say why it is skipped."""
    try:
        return build()
    except ConfigError as error:
        print(f"skipped: {error}")
        return None


def main() -> None:
    """Run every engine installed on this machine and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per sentence (median is shown)")
    args = parser.parse_args()

    started = time.perf_counter()
    piper = PiperSynthesizer()
    verified = time.perf_counter() - started
    started = time.perf_counter()
    piper.voice()
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    piper.warm()
    warmed = time.perf_counter() - started
    print(f"piper: hash check {verified * 1000:.0f} ms, load {loaded * 1000:.0f} ms, ", end="")
    print(f"warm-up {warmed * 1000:.0f} ms")

    print(f"\n{'engine':<14} {'text':<41} {'first ms':>8} {'total ms':>9} {'audio s':>7} {'RTF':>6}")
    report("piper joe", piper, ENGLISH, "en", args.repeat)
    espeak = optional(EspeakSynthesizer)
    if espeak is not None:
        report("espeak-ng en", espeak, ENGLISH, "en", args.repeat)
        report("espeak-ng de", espeak, GERMAN, "de", args.repeat)
    for voice in ("slt", "kal"):
        flite = optional(partial(FliteSynthesizer, voice))
        if flite is not None:
            report(f"flite {voice}", flite, ENGLISH, "en", args.repeat)

    print("\nfirst OutputAudio through TTSProcessor (median / max ms):")
    engines: list[tuple[str, SpeechSynthesizer | None]] = [("piper joe", piper), ("espeak-ng", espeak)]
    for label, engine in engines:
        if engine is None:
            continue
        samples = anyio.run(processor_first_audio, engine, ENGLISH[0], args.repeat)
        print(f"  {label:<12} {statistics.median(samples) * 1000:7.1f} / {max(samples) * 1000:7.1f}")


if __name__ == "__main__":
    main()
