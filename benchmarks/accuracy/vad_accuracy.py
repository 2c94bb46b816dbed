"""VAD frame-level precision / recall / F1 per condition, for each detector.

Builds the corpus at run time (espeak-ng, see ``corpus.py``), degrades it
(noise at 20/10/5 dB SNR, telephone band μ-law, clipping, packet loss) and
streams every recording through a fresh classifier per detector, 20 ms at a
time, as a call would. Two ground truths from the clean signal: ``p56`` (ITU-T
P.56 speech activity: within 15.9 dB of the active level, 200 ms hangover;
the primary one) and ``energy`` (strict: any 20 ms frame within 40 dB of
the loudest). Frames lost to packet loss are not scored (there is no voice
in them to find). The ``processor`` row is the VADProcessor's
smoothed in-speech flag (pre-roll and hangover included), so it trades
precision for never clipping a word.

Run: ``.venv/bin/python benchmarks/accuracy/vad_accuracy.py [--quick]`` (prints the figures).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from aybiza.pipeline.frames import Frame, InputAudio
from aybiza.processors.vad import AdaptiveClassifier, FrameClassifier, VADProcessor, WebRtcClassifier
from benchmarks.accuracy import corpus

__all__ = ["CONDITIONS", "DETECTORS", "run"]


Degrade = Callable[[corpus.Signal, int, np.random.Generator], tuple[corpus.Signal, int]]


def _tel(noise: str | None = None, snr: float = 0.0) -> Degrade:
    def degrade(clean: corpus.Signal, rate: int, rng: np.random.Generator) -> tuple[corpus.Signal, int]:
        signal = corpus.add_noise(clean, rate, snr, noise, rng) if noise else clean
        return corpus.telephone(signal, rate), 8000

    return degrade


CONDITIONS: dict[str, Degrade] = {
    "clean_16k": lambda clean, rate, rng: (clean, rate),
    "clean_tel": _tel(),
    **{
        f"{noise}_{snr}dB_tel": _tel(noise, snr)
        for noise in ("white", "pink", "brown", "street")
        for snr in (20, 10, 5)
    },
    "clipped_tel": lambda clean, rate, rng: (corpus.telephone(corpus.clip(clean, 18.0), rate), 8000),
    "loss10_tel": lambda clean, rate, rng: (
        corpus.packet_loss(corpus.telephone(clean, rate), 8000, 0.10, rng),
        8000,
    ),
}


def _silero() -> FrameClassifier:
    from aybiza.processors.vad import SileroClassifier

    return SileroClassifier()


DETECTORS: dict[str, Callable[[], FrameClassifier]] = {
    "webrtc0": lambda: WebRtcClassifier(0),
    "webrtc1": lambda: WebRtcClassifier(1),
    "webrtc2": lambda: WebRtcClassifier(2),
    "webrtc3": lambda: WebRtcClassifier(3),
    "adaptive2": lambda: AdaptiveClassifier(2),
    "adaptive3": lambda: AdaptiveClassifier(3),
    "silero": _silero,
}


def _silero_available() -> bool:
    try:
        _silero()
    except Exception:
        return False
    return True


def _decisions(classify: FrameClassifier, pcm: npt.NDArray[np.int16], rate: int) -> tuple[list[bool], float]:
    step = int(rate * corpus.FRAME_S)
    data = pcm.tobytes()
    out: list[bool] = []
    started = time.perf_counter()
    for start in range(0, len(data) - 2 * step + 1, 2 * step):
        out.append(classify(data[start : start + 2 * step], rate))
    return out, time.perf_counter() - started


async def _processor_flags(pcm: npt.NDArray[np.int16], rate: int) -> list[bool]:
    """The VADProcessor's smoothed flag per frame (gate off, so every frame comes back)."""
    vad = VADProcessor(gate=False)
    flags: list[bool] = []

    async def sink(frame: Frame) -> None:
        if isinstance(frame, InputAudio):
            flags.append(bool(frame.voiced))

    vad.push = sink
    step = int(rate * corpus.FRAME_S) * 2
    data = pcm.tobytes()
    for i, start in enumerate(range(0, len(data) - step + 1, step)):
        await vad.process(InputAudio(data[start : start + step], rate, i * corpus.FRAME_S))
    return flags


def _prf(truth: npt.NDArray[np.bool_], guess: npt.NDArray[np.bool_]) -> dict[str, float]:
    tp = int(np.count_nonzero(truth & guess))
    fp = int(np.count_nonzero(~truth & guess))
    fn = int(np.count_nonzero(truth & ~guess))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


LABELS: dict[str, Callable[[corpus.Signal, int], npt.NDArray[np.bool_]]] = {
    "p56": corpus.labels_p56,
    "energy": corpus.labels_for,
}
"""Ground truths: ITU-T P.56 activity (200 ms hangover; primary) and strict per-frame energy."""


def run(quick: bool = False) -> dict[str, Any]:
    """Score every detector on every condition under both labelings; returns the JSON-able result."""
    if not corpus.have_espeak():
        return {"benchmark": "vad_accuracy", "skipped": "espeak-ng is not installed"}
    recordings = [corpus.recording(seed, utterances=3) for seed in range(6 if quick else 16)]
    detectors = dict(DETECTORS)
    if not _silero_available():
        detectors.pop("silero")
    names = [*detectors, "processor"]
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {label: {} for label in LABELS}
    cost_s = dict.fromkeys(detectors, 0.0)
    frames_run = 0
    started = time.perf_counter()
    for condition, degrade in CONDITIONS.items():
        truths: dict[str, list[npt.NDArray[np.bool_]]] = {label: [] for label in LABELS}
        guesses: dict[str, list[npt.NDArray[np.bool_]]] = {name: [] for name in names}
        for index, rec in enumerate(recordings):
            rng = np.random.default_rng(1000 + index)
            signal, rate = degrade(rec.clean, rec.rate, rng)
            pcm = corpus.to_pcm16(signal)
            levels = corpus.frame_levels_db(signal, rate)
            per_detector = {}
            for name, make in detectors.items():
                flags, seconds = _decisions(make(), pcm, rate)
                per_detector[name] = flags
                cost_s[name] += seconds
            per_detector["processor"] = asyncio.run(_processor_flags(pcm, rate))
            frames_run += len(per_detector[names[0]])
            labels = {label: make_labels(rec.clean, rec.rate) for label, make_labels in LABELS.items()}
            n = min(levels.size, *(v.size for v in labels.values()), *(len(v) for v in per_detector.values()))
            # Frames lost to packet loss hold no voice to find: not scored.
            keep = levels[:n] > -119.0 if condition.startswith("loss") else np.ones(n, dtype=np.bool_)
            for label, truth in labels.items():
                truths[label].append(truth[:n][keep])
            for name, flags in per_detector.items():
                guesses[name].append(np.asarray(flags[:n], dtype=np.bool_)[keep])
        for label in LABELS:
            truth_cat = np.concatenate(truths[label])
            results[label][condition] = {name: _prf(truth_cat, np.concatenate(guesses[name])) for name in names}

    def mean_f1(label: str, conditions: list[str]) -> dict[str, float]:
        rows = results[label]
        return {name: round(float(np.mean([rows[c][name]["f1"] for c in conditions])), 4) for name in names}

    telephone = [c for c in CONDITIONS if c.endswith("_tel")]
    at_10db = [c for c in CONDITIONS if "_10dB_" in c]
    return {
        "benchmark": "vad_accuracy",
        "quick": quick,
        "recordings": len(recordings),
        "speech_seconds": round(sum(u.end - u.start for r in recordings for u in r.utterances), 1),
        "frames_per_condition": frames_run // len(CONDITIONS),
        "summary": {
            label: {
                "f1_10dB_telephone": mean_f1(label, at_10db),
                "f1_mean_telephone": mean_f1(label, telephone),
                "f1_worst_telephone": {name: min(results[label][c][name]["f1"] for c in telephone) for name in names},
            }
            for label in LABELS
        },
        "classifier_us_per_frame": {name: round(cost_s[name] / frames_run * 1e6, 2) for name in detectors},
        "conditions": results,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    """Run standalone and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    result = run(quick=parser.parse_args().quick)
    print(json.dumps({k: result[k] for k in result if k != "conditions"}, indent=2))
    for label, table in result.get("conditions", {}).items():
        print(f"F1 per condition ({label} labels)")
        for condition, rows in table.items():
            print(f"  {condition:18s} " + " ".join(f"{name}={row['f1']:.3f}" for name, row in rows.items()))


if __name__ == "__main__":
    main()
