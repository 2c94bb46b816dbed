"""Sounds over the agent: what stops it, what lets it go on, how fast real barge-in clears (8 kHz μ-law).

Each sound is put on a quiet phone line (pink noise 45 dB under speech,
8 kHz μ-law) as if the caller made it while hearing the agent, and goes
through the call's own rules offline: the VAD in barge-in mode (speech must
last ``barge_in_start_ms``, 160 ms) decides whether the agent is stopped; a
stop after at most 1 s lets the agent go on at once (``AgentResume``), and
the transcript of what was heard (whisper tiny.en, the embedded recogniser)
decides whether it was a turn after all (:func:`aybiza.processors.turns.is_backchannel`).

Sets: ``noise`` — knocks, clicks and short sounds cut from Tux Paint's stamp
recordings (cymbal, drums, animals; 0.1-0.5 s; real recordings, not speech);
``backchannel_human`` — the short overlapping interjections in pyannote's
two-speaker conversation (human); ``backchannel_synthetic`` — "uh-huh",
"okay", "mm-hmm", "yeah", "right" in espeak-ng voices (synthetic: no human
recording of them ships in a package); ``barge_in`` — LibriVox sentences (human).

Figures: ``false_interruption_rate`` — noises and backchannels that cost
the caller the agent's answer (stopped and not resumed); ``stopped_rate`` —
how many stopped it at all (each then resumed within a second of its end);
barge-in detection time p50/p95 (sound onset to the interruption; the phone
output's ``clear`` follows within a frame) and the share within 300 ms.

Run: ``.venv/bin/python -m benchmarks.interruptions [--quick]`` (prints the figures).
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

import anyio
import numpy as np

from aybiza.codecs import ulaw2lin
from aybiza.pipeline import InputAudio, SpeechStarted, SpeechStopped
from aybiza.processors.stt.whisper import WhisperRecognizer
from aybiza.processors.turns import is_backchannel
from aybiza.processors.vad import VADProcessor
from aybiza.testing.caller import caller_speech
from aybiza.testing.kit import run_stage
from benchmarks.accuracy.corpus import make_noise
from benchmarks.corpus.fetch import debian_package, decode, have_tools
from benchmarks.corpus.human import conversation, librivox
from benchmarks.corpus.mix import telephone, to_pcm16
from benchmarks.corpus.score import percentile

__all__ = ["run"]

RATE = 16000
BARGE_IN_START_MS = 160
BACKCHANNEL_MAX_S = 1.0
_SOUNDS = ("hobbies/music/percussion/cymbal_crash.ogg", "hobbies/music/percussion/drum_tomtom_floor.ogg",
           "hobbies/music/percussion/drumkit.ogg", "animals/insects/hornet.ogg", "vehicles/emergency/firetruck.ogg")
_BACKCHANNELS = ("uh-huh", "okay", "mm-hmm", "yeah", "right")


def _on_the_line(sound: np.ndarray, rng: np.random.Generator) -> bytes:
    """0.5 s of line, the sound, 1.5 s of line; 8 kHz μ-law decoded to PCM16."""
    level = float(np.sqrt(np.mean(sound**2))) or 1e-3
    signal = np.concatenate((np.zeros(RATE // 2), sound, np.zeros(3 * RATE // 2)))
    signal = signal + make_noise("pink", signal.size, RATE, rng) * level / 10 ** (45 / 20)
    return bytes(to_pcm16(telephone(signal, RATE)).tobytes())


def _noises(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    root = debian_package("tuxpaint-stamps-default") / "usr/share/tuxpaint/stamps"
    out = []
    for index in range(count):
        audio = decode(root / _SOUNDS[index % len(_SOUNDS)])
        length = int(rng.uniform(0.1, 0.5) * RATE)
        start = int(rng.integers(max(1, audio.size - length)))
        piece = audio[start : start + length]
        out.append(piece / max(float(np.abs(piece).max()), 1e-6) * 0.5)
    return out


def _human_backchannels() -> list[np.ndarray]:
    """Speech of one speaker shorter than 1 s that starts while the other is talking."""
    audio, turns = conversation()
    out = []
    for speaker, start, end in turns:
        if end - start > BACKCHANNEL_MAX_S:
            continue
        if any(other != speaker and s < start < e for other, s, e in turns):
            out.append(audio[int(start * RATE) : int(end * RATE)])
    return out


def _synthetic_backchannels() -> list[np.ndarray]:
    from aybiza.codecs import resample

    return [np.frombuffer(resample(ulaw2lin(caller_speech(word)), 8000, RATE), dtype="<i2") / 32768.0
            for word in _BACKCHANNELS]


def _onset(sound: np.ndarray) -> float:
    """Seconds into the sound where it starts: the first 20 ms within 30 dB of its loudest."""
    step = RATE // 50
    frames = sound[: sound.size // step * step].reshape(-1, step)
    levels = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    return float(np.flatnonzero(levels > levels.max() - 30)[0]) * 0.02 if levels.size else 0.0


def _hear(pcm: bytes, onset: float, recognizer: WhisperRecognizer) -> dict[str, Any]:
    """What the call does with the sound: stopped? when? resumed, or a turn?"""
    vad = VADProcessor(start_ms=BARGE_IN_START_MS, stop_ms=160)  # barge-in mode: the caller hears the agent
    step = 320
    frames = [InputAudio(pcm[i : i + step], 8000, i / 16000) for i in range(0, len(pcm) - step + 1, step)]
    recorder = anyio.run(lambda: run_stage(vad, frames))
    started = [f for f in recorder.frames if isinstance(f, SpeechStarted)]
    if not started:
        return {"stopped": False}
    stopped = next((f for f in recorder.frames if isinstance(f, SpeechStopped)), None)
    confirmed_at = started[0].at + BARGE_IN_START_MS / 1000  # when the VAD had heard enough to say so
    length = (stopped.at if stopped else len(pcm) / 16000) - started[0].at
    speech = b"".join(f.pcm for f in recorder.frames if isinstance(f, InputAudio))
    text = recognizer.transcribe(speech, 8000, "en") if length <= BACKCHANNEL_MAX_S else "(long)"
    resumed = length <= BACKCHANNEL_MAX_S and is_backchannel(text)
    return {"stopped": True, "detect_ms": (confirmed_at - onset) * 1000, "length_s": length, "text": text,
            "resumed": resumed}


def run(quick: bool = False) -> dict[str, Any]:
    """Every set through the barge-in rules."""
    if not have_tools():
        return {"skipped": "needs sox, apt-get and dpkg-deb to fetch the recordings"}
    started = time.perf_counter()
    rng = np.random.default_rng(17)
    recognizer = WhisperRecognizer()
    sets = {"noise": _noises(rng, 10 if quick else 30), "backchannel_human": _human_backchannels(),
            "backchannel_synthetic": _synthetic_backchannels(), "barge_in": [c.audio() for c in librivox()]}
    results: dict[str, list[dict[str, Any]]] = {}
    for name, sounds in sets.items():
        results[name] = [_hear(_on_the_line(sound, rng), 0.5 + _onset(sound), recognizer) for sound in sounds]
    false_ones = [r for name in ("noise", "backchannel_human", "backchannel_synthetic") for r in results[name]]
    lost = [r for r in false_ones if r["stopped"] and not r["resumed"]]
    barge = [r["detect_ms"] for r in results["barge_in"] if r["stopped"]]
    summary = {name: {"sounds": len(rows), "stopped": sum(r["stopped"] for r in rows),
                      "resumed": sum(r.get("resumed", False) for r in rows),
                      "texts": [r.get("text", "") for r in rows if r["stopped"]][:8]} for name, rows in results.items()}
    return {
        "speech": "noise: real recordings; backchannel_human: pyannote sample (human); backchannel_synthetic: "
                  "espeak-ng; barge_in: LibriVox (human); 8 kHz μ-law",
        "by_set": summary,
        "false_interruption_rate": round(len(lost) / len(false_ones), 3) if false_ones else None,
        "stopped_rate": round(sum(r["stopped"] for r in false_ones) / len(false_ones), 3) if false_ones else None,
        "barge_in_detected": f"{len(barge)}/{len(results['barge_in'])}",
        "barge_in_detect_ms_p50": round(percentile(barge, 50) or 0, 1),
        "barge_in_detect_ms_p95": round(percentile(barge, 95) or 0, 1),
        "barge_in_within_300ms": round(sum(ms <= 300 for ms in barge) / len(results["barge_in"]), 3),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description="sounds over the agent")
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
