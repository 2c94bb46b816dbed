"""Per-utterance time of the embedded recognisers on telephone-band (8 kHz) espeak-ng speech.

Run: ``.venv/bin/python benchmarks/stt_bench.py [--repeat N]``. Needs espeak-ng.
For each sentence it prints the audio length, whisper's time per utterance
(transcribed after speech stop) and pocketsphinx's, both as a one-shot
decode and as the stream's finishing cost (what a caller waits for after they
stop speaking, given the audio was decoded while they spoke), plus the text.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import soxr

from aybiza.processors.stt.sphinx import SphinxRecognizer
from aybiza.processors.stt.whisper import WhisperRecognizer

__all__ = ["main"]

RATE = 8000
SENTENCES = (
    "what are your opening hours",
    "I want to cancel my order",
    "what time do you open on saturday",
    "hello I would like to speak to someone about my account please",
)


def telephone_speech(text: str) -> bytes:
    """``text`` spoken by espeak-ng (en-us, 150 wpm), resampled to 8 kHz PCM16."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
        with wave.open(str(path)) as wav:
            rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return bytes(soxr.resample(samples, rate, RATE).astype("<i2").tobytes())


def timed(func: Callable[[], str], repeat: int) -> tuple[float, str]:
    """Median seconds of ``repeat`` calls, and the last result."""
    seconds = []
    result = ""
    for _ in range(repeat):
        started = time.perf_counter()
        result = func()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def sphinx_stream_finish(recognizer: SphinxRecognizer, pcm: bytes) -> tuple[float, str]:
    """Feed ``pcm`` in 100 ms pieces as a stream; seconds spent in ``end()`` and the final text."""
    recognizer.begin(RATE)
    step = 2 * RATE // 10
    for offset in range(0, len(pcm), step):
        recognizer.feed(pcm[offset : offset + step])
    started = time.perf_counter()
    text = recognizer.end()
    return time.perf_counter() - started, text


def main() -> None:
    """Print load times and a per-utterance table for whisper tiny.en and pocketsphinx."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per utterance (median is shown)")
    args = parser.parse_args()

    whisper = WhisperRecognizer()
    started = time.perf_counter()
    whisper.load()
    whisper_load = time.perf_counter() - started
    started = time.perf_counter()
    sphinx = SphinxRecognizer()
    sphinx_load = time.perf_counter() - started
    print(
        f"load: whisper tiny.en {whisper_load:.2f} s (hash check + model), pocketsphinx {sphinx_load:.2f} s"
    )

    header = f"{'audio s':>7} {'whisper s':>9} {'RTF':>5} {'sphinx s':>8} {'RTF':>5} {'stream end ms':>13}"
    print(header)
    print("-" * len(header))
    for sentence in SENTENCES:
        pcm = telephone_speech(sentence)
        audio_seconds = len(pcm) / (2 * RATE)
        whisper_s, whisper_text = timed(partial(whisper.transcribe, pcm, RATE, "en"), args.repeat)
        sphinx_s, sphinx_text = timed(partial(sphinx.transcribe, pcm, RATE), args.repeat)
        finish_s = statistics.median(sphinx_stream_finish(sphinx, pcm)[0] for _ in range(args.repeat))
        print(
            f"{audio_seconds:7.2f} {whisper_s:9.3f} {whisper_s / audio_seconds:5.2f} "
            f"{sphinx_s:8.3f} {sphinx_s / audio_seconds:5.2f} {1000 * finish_s:13.1f}"
        )
        print(f"    said:    {sentence}\n    whisper: {whisper_text}\n    sphinx:  {sphinx_text}")


if __name__ == "__main__":
    main()
