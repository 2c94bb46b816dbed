"""Per-frame cost of the edge processors (VAD, quality, language) alone and chained.

A call's worth of telephone audio (espeak-ng speech with pauses, pink noise
at 15 dB SNR, 8 kHz, 20 ms frames; synthetic tones if espeak-ng is missing)
is pushed through each processor and through the chain
``vad -> quality -> language -> sink`` on one asyncio loop, timing every
``await process(frame)`` with ``perf_counter_ns``. Budget: <= 50 us p99 a
frame for the chain. Text language ID runs once per early final transcript,
not per frame; its cost is reported separately.

Run: ``.venv/bin/python benchmarks/edge.py [--quick]`` (prints the figures).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from aybiza.pipeline.context import CallContext
from aybiza.pipeline.frames import Frame, InputAudio, Transcript
from aybiza.pipeline.processor import Processor
from aybiza.processors.language import LanguageProcessor, detect_language, detector_for
from aybiza.processors.quality import QualityProcessor
from aybiza.processors.vad import VADProcessor

__all__ = ["run"]

RATE = 8000
FRAME_BYTES = RATE // 50 * 2

PHRASES = (
    "yes please",
    "I want to pay my bill",
    "hola quisiera pagar",
    "je voudrais payer ma facture",
    "ich möchte meine Rechnung bezahlen",
    "no thanks",
    "what time do you open tomorrow",
    "mi tarjeta no funciona",
)


def _call_audio(seconds: float) -> bytes:
    """Telephone-band speech with pauses in pink noise (15 dB SNR), as PCM16 at 8 kHz."""
    try:
        from benchmarks.accuracy import corpus
    except ImportError:  # pragma: no cover - run from elsewhere
        corpus = None  # type: ignore[assignment]
    if corpus is not None and corpus.have_espeak():
        parts = []
        total = 0.0
        seed = 0
        while total < seconds:
            rec = corpus.recording(seed, utterances=3)
            noisy = corpus.add_noise(rec.clean, rec.rate, 15.0, "pink", np.random.default_rng(seed))
            parts.append(corpus.telephone(noisy, rec.rate))
            total += parts[-1].size / RATE
            seed += 1
        audio = np.concatenate(parts)[: int(seconds * RATE)]
        return bytes(corpus.to_pcm16(audio).tobytes())
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    voiced = (np.sin(2 * np.pi * 0.4 * t) > 0).astype(np.float64)
    tone = 0.1 * voiced * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t))
    audio = tone + 0.01 * rng.standard_normal(t.size)
    return bytes(np.clip(audio * 32768, -32768, 32767).astype("<i2").tobytes())


class _Sink(Processor):
    """The end of the chain: counts what arrives."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def process(self, frame: Frame) -> None:
        self.count += 1


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    values = np.asarray(samples_ns, dtype=np.float64) / 1000.0
    return {
        "p50_us": round(float(np.percentile(values, 50)), 2),
        "p99_us": round(float(np.percentile(values, 99)), 2),
        "p999_us": round(float(np.percentile(values, 99.9)), 2),
        "mean_us": round(float(values.mean()), 2),
        "max_us": round(float(values.max()), 2),
        "frames": len(samples_ns),
    }


async def _time_chain(make: Callable[[], list[Processor]], pcm: bytes, repeats: int) -> dict[str, float]:
    """Run the audio through a fresh chain ``repeats`` times; per-frame cost of the head's ``process``."""
    samples: list[int] = []
    for _ in range(repeats):
        processors = make()
        sink = _Sink()
        chain = [*processors, sink]
        for upstream, downstream in zip(chain, chain[1:], strict=False):
            upstream.link(downstream)
        ctx = CallContext(call_id="bench", caller="+442079460000")
        async with asyncio.timeout(120):
            for processor in chain:
                await processor.start(ctx, None)  # type: ignore[arg-type]  # edge processors spawn no task
        head = chain[0].process
        clock = time.perf_counter_ns
        at = 0.0
        for start in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
            frame = InputAudio(pcm[start : start + FRAME_BYTES], RATE, at)
            at += 0.02
            began = clock()
            await head(frame)
            samples.append(clock() - began)
        for processor in chain:
            await processor.stop()
    return _percentiles(samples[50:])  # the first frames warm caches


async def _time_transcripts(repeats: int) -> dict[str, Any]:
    detector = detector_for(frozenset({"en", "es", "fr", "de"}))
    detect_language(detector, "warm up")
    direct: list[int] = []
    for _ in range(repeats):
        for phrase in PHRASES:
            began = time.perf_counter_ns()
            detect_language(detector, phrase)
            direct.append(time.perf_counter_ns() - began)
    through: list[int] = []
    for _ in range(repeats):
        processor = LanguageProcessor()
        processor.link(None)
        await processor.start(CallContext(call_id="bench"), None)  # type: ignore[arg-type]
        for phrase in PHRASES[:3]:
            began = time.perf_counter_ns()
            await processor.process(Transcript(phrase, final=True))
            through.append(time.perf_counter_ns() - began)
    return {"detect": _percentiles(direct), "processor_final_transcript": _percentiles(through)}


def run(quick: bool = False) -> dict[str, Any]:
    """Measure every configuration; returns the JSON-able result."""
    started = time.perf_counter()
    seconds = 20.0 if quick else 60.0
    repeats = 2 if quick else 4
    pcm = _call_audio(seconds)

    configurations: dict[str, Callable[[], list[Processor]]] = {
        "vad_adaptive": lambda: [VADProcessor()],
        "vad_webrtc": lambda: [VADProcessor(detector="webrtc")],
        "quality": lambda: [QualityProcessor()],
        "language_audio": lambda: [LanguageProcessor()],
        "chain_gated": lambda: [VADProcessor(), QualityProcessor(), LanguageProcessor()],
        "chain_ungated": lambda: [VADProcessor(gate=False), QualityProcessor(), LanguageProcessor()],
    }
    per_frame = {name: asyncio.run(_time_chain(make, pcm, repeats)) for name, make in configurations.items()}
    try:
        per_frame["vad_silero"] = asyncio.run(
            _time_chain(lambda: [VADProcessor(detector="silero")], pcm[: len(pcm) // 4], 1)
        )
    except Exception as error:  # silero-vad not installed: the option is optional
        per_frame["vad_silero"] = {"skipped": str(error)}  # type: ignore[dict-item]
    transcripts = asyncio.run(_time_transcripts(20 if quick else 100))
    worst_chain = max(per_frame["chain_gated"]["p99_us"], per_frame["chain_ungated"]["p99_us"])
    return {
        "benchmark": "edge",
        "quick": quick,
        "audio_seconds": seconds,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "per_frame": per_frame,
        "text_lid": transcripts,
        "budget_p99_us": 50.0,
        "chain_p99_us": worst_chain,
        "within_budget": worst_chain <= 50.0,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    """Run standalone and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    result = run(quick=parser.parse_args().quick)
    for name, row in result["per_frame"].items():
        if "p50_us" in row:
            print(f"{name:16s} p50 {row['p50_us']:7.2f} us  p99 {row['p99_us']:7.2f} us  max {row['max_us']:8.1f} us")
        else:
            print(f"{name:16s} {row}")
    for name, row in result["text_lid"].items():
        print(f"lid {name:27s} p50 {row['p50_us']:7.1f} us  p99 {row['p99_us']:7.1f} us")
    print(f"chain p99 {result['chain_p99_us']} us (budget 50 us): {'OK' if result['within_budget'] else 'OVER'}")


if __name__ == "__main__":
    main()
