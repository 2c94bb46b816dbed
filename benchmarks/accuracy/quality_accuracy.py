"""Does the non-intrusive quality score rank degraded calls like narrowband PESQ does?

Builds telephone-band recordings with espeak-ng (see ``corpus.py``),
degrades each in many ways and strengths (noise of four kinds at 40-0 dB
SNR, clipping, bursty packet loss, low-pass lines, quiet speech and
combinations), scores every degraded copy with PESQ (ITU-T P.862
narrowband, ``pesq`` package, against the clean μ-law copy) and with the
call score of :class:`aybiza.processors.quality.QualityMeter`, and reports
Spearman's ρ between the two (goal ≥ 0.8), per-kind ρ and the tier mix.

Run: ``.venv/bin/python benchmarks/accuracy/quality_accuracy.py [--quick]`` (prints the figures).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from aybiza.processors.quality import QualityMeter, tier_for
from benchmarks.accuracy import corpus

__all__ = ["DEGRADATIONS", "run", "spearman"]

RATE = 8000

# name -> (kind, degrade(clean 16 kHz, telephone reference 8 kHz, rng) -> degraded 8 kHz)
Degrade = Callable[[corpus.Signal, corpus.Signal, np.random.Generator], corpus.Signal]


def _noisy(kind: str, snr: float) -> Degrade:
    return lambda clean, ref, rng: corpus.telephone(corpus.add_noise(clean, 16000, snr, kind, rng), 16000)


def _clipped(gain_db: float) -> Degrade:
    return lambda clean, ref, rng: corpus.telephone(corpus.clip(clean, gain_db), 16000)


def _lossy(loss: float) -> Degrade:
    return lambda clean, ref, rng: corpus.packet_loss(ref, RATE, loss, rng)


def _muffled(cutoff: float) -> Degrade:
    return lambda clean, ref, rng: corpus.mulaw_roundtrip(corpus.lowpass(ref, RATE, cutoff))


def _quiet(dbfs: float) -> Degrade:
    return lambda clean, ref, rng: corpus.telephone(clean * 10 ** ((dbfs + 20) / 20), 16000)


def _combo(snr: float, loss: float, gain_db: float) -> Degrade:
    def degrade(clean: corpus.Signal, ref: corpus.Signal, rng: np.random.Generator) -> corpus.Signal:
        noisy = corpus.add_noise(corpus.clip(clean, gain_db), 16000, snr, "pink", rng)
        return corpus.packet_loss(corpus.telephone(noisy, 16000), RATE, loss, rng)

    return degrade


DEGRADATIONS: dict[str, tuple[str, Degrade]] = {
    "clean": ("clean", lambda clean, ref, rng: ref),
    **{
        f"{kind}_{snr}dB": ("noise", _noisy(kind, snr))
        for kind in ("white", "pink", "brown", "street")
        for snr in (40, 30, 20, 15, 10, 5, 0)
    },
    **{f"clip_{gain}dB": ("clipping", _clipped(gain)) for gain in (3, 6, 9, 12, 18, 24)},
    **{f"loss_{round(loss * 100)}pct": ("loss", _lossy(loss)) for loss in (0.01, 0.02, 0.05, 0.1, 0.2)},
    **{f"lowpass_{cutoff}Hz": ("bandwidth", _muffled(cutoff)) for cutoff in (1000, 1500, 2000, 2500, 3000)},
    **{f"quiet_{-dbfs}dBFS": ("level", _quiet(dbfs)) for dbfs in (-35, -45)},
    "pink20_loss5": ("combined", _combo(20, 0.05, 0)),
    "pink15_clip9": ("combined", _combo(15, 0.0, 9)),
    "pink30_clip12_loss2": ("combined", _combo(30, 0.02, 12)),
    "pink10_loss10": ("combined", _combo(10, 0.10, 0)),
}


def _ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Ranks from 1, ties sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (Pearson on tie-averaged ranks)."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = float(np.sqrt(np.dot(ra, ra) * np.dot(rb, rb)))
    return float(np.dot(ra, rb)) / denominator if denominator else 0.0


def call_score(signal: corpus.Signal) -> float:
    """Stream the signal through a fresh QualityMeter in 20 ms frames; the call score."""
    meter = QualityMeter()
    pcm = corpus.to_pcm16(signal).tobytes()
    step = int(RATE * corpus.FRAME_S) * 2
    for start in range(0, len(pcm) - step + 1, step):
        meter.feed(pcm[start : start + step], RATE)
    return meter.call_score


def run(quick: bool = False, seeds: range | None = None) -> dict[str, Any]:
    """Score the degraded set with PESQ and the meter; Spearman ρ overall and per kind."""
    if not corpus.have_espeak():
        return {"benchmark": "quality_accuracy", "skipped": "espeak-ng is not installed"}
    from pesq import pesq  # imported here: only the benchmark needs it

    started = time.perf_counter()
    seeds = seeds if seeds is not None else range(2 if quick else 5)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        rec = corpus.recording(seed, utterances=2)
        reference = corpus.telephone(rec.clean, rec.rate)
        for name, (kind, degrade) in DEGRADATIONS.items():
            rng = np.random.default_rng(seed * 1000 + len(rows))
            degraded = degrade(rec.clean, reference, rng)
            n = min(reference.size, degraded.size)
            mos = float(pesq(RATE, reference[:n], degraded[:n], "nb"))
            score = call_score(degraded[:n])
            rows.append(
                {"seed": seed, "condition": name, "kind": kind, "pesq": round(mos, 3), "score": round(score, 4)}
            )
    pesq_values = [r["pesq"] for r in rows]
    scores = [r["score"] for r in rows]
    per_kind = {}
    for kind in sorted({r["kind"] for r in rows} - {"clean"}):
        subset = [r for r in rows if r["kind"] in (kind, "clean")]
        per_kind[kind] = round(spearman([r["pesq"] for r in subset], [r["score"] for r in subset]), 3)
    by_condition: dict[str, dict[str, Any]] = {}
    for name in DEGRADATIONS:
        subset = [r for r in rows if r["condition"] == name]
        by_condition[name] = {
            "pesq": round(float(np.mean([r["pesq"] for r in subset])), 2),
            "score": round(float(np.mean([r["score"] for r in subset])), 3),
            "tier": tier_for(float(np.mean([r["score"] for r in subset]))),
        }
    tiers = [tier_for(s) for s in scores]
    return {
        "benchmark": "quality_accuracy",
        "quick": quick,
        "files": len(rows),
        "spearman_rho": round(spearman(pesq_values, scores), 3),
        "spearman_rho_per_kind": per_kind,
        "tiers": {tier: tiers.count(tier) for tier in ("high", "medium", "low")},
        "conditions": by_condition,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    """Run standalone and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs=2, metavar=("FIRST", "STOP"), help="recording seeds (tuning)")
    args = parser.parse_args()
    result = run(quick=args.quick, seeds=range(*args.seeds) if args.seeds else None)
    print(json.dumps({k: v for k, v in result.items() if k != "conditions"}, indent=2))
    for name, row in result.get("conditions", {}).items():
        print(f"  {name:22s} pesq={row['pesq']:.2f} score={row['score']:.3f} {row['tier']}")


if __name__ == "__main__":
    main()
