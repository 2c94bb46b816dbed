"""Quality score against narrowband PESQ on human speech with real noise kinds (the telephone band).

Each recording is two sentences read by volunteers (English: LibriVox and
pocketsphinx's recordings; Spanish and French: stamp descriptions; see
``benchmarks/corpus``) with half a second between them. Every recording is
degraded in each condition of :func:`benchmarks.corpus.mix.impair` (white,
babble, music and engine noise at 30-0 dB SNR, clipping, bursty packet loss,
the GSM codec, GSM over babble) and always ends in 8 kHz μ-law. PESQ (ITU-T
P.862 narrowband, ``pesq`` package) compares it with the clean telephone
copy; the call score of :class:`aybiza.processors.quality.QualityMeter` is
computed on the degraded audio alone. Reported: Spearman's ρ overall and per
kind (goal ≥ 0.8), the tiers of 0 and 5 dB white and babble noise (goal:
never ``high``), and per-condition means. All speech here is human.

Run: ``.venv/bin/python -m benchmarks.accuracy.quality_human [--quick]`` (prints the figures).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import json
import time
from typing import Any

import numpy as np

from aybiza.processors.quality import tier_for
from benchmarks.accuracy.quality_accuracy import call_score, spearman
from benchmarks.corpus.fetch import have_tools
from benchmarks.corpus.human import Clip, librivox, pocketsphinx_en, tuxpaint
from benchmarks.corpus.mix import impair, telephone

__all__ = ["CONDITIONS", "run"]

CONDITIONS: dict[str, str] = {
    "clean": "clean",
    **{f"{kind}_{snr}dB": "noise" for kind in ("white", "babble", "music", "engine") for snr in (30, 20, 10, 5, 0)},
    **{f"clip_{gain}dB": "clipping" for gain in (6, 12, 18)},
    **{f"loss_{pct}pct": "loss" for pct in (2, 5, 10, 20)},
    "gsm": "codec",
    "gsm_babble_10dB": "codec",
}
NOISY_BELOW_HIGH = tuple(f"{kind}_{snr}dB" for kind in ("white", "babble") for snr in (0, 5))


def recordings(count: int, seed: int = 3) -> list[tuple[str, np.ndarray]]:
    """``count`` two-sentence human recordings at 16 kHz (en, es, fr in turn)."""
    rng = np.random.default_rng(seed)
    pools: dict[str, list[Clip]] = {"en": [*librivox(), *pocketsphinx_en()], "es": tuxpaint("es"),
                                    "fr": tuxpaint("fr")}
    order = {language: iter(rng.permutation(len(pool))) for language, pool in pools.items()}
    out = []
    for index in range(count):
        language = ("en", "es", "fr")[index % 3]
        pool = pools[language]
        picked: list[Clip] = []
        while len(picked) < 2:
            clip = pool[int(next(order[language]))]
            if clip.audio().size > 1.2 * 16000:
                picked.append(clip)
        first, second = picked
        audio = np.concatenate((first.audio(), np.zeros(8000), second.audio()))
        out.append((f"{first.id}+{second.id.rsplit('/', 1)[-1]}", audio / max(np.abs(audio).max(), 1e-6) * 0.3))
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Score every recording in every condition with PESQ and the meter."""
    if not have_tools():
        return {"benchmark": "quality_human", "skipped": "needs sox, apt-get and dpkg-deb for the human recordings"}
    from pesq import pesq

    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for number, (name, clean) in enumerate(recordings(6 if quick else 15)):
        reference = telephone(clean, 16000)
        for condition, kind in CONDITIONS.items():
            rng = np.random.default_rng(number * 100 + len(rows))
            degraded = impair(clean, condition, rng)
            n = min(reference.size, degraded.size)
            mos = float(pesq(8000, reference[:n], degraded[:n], "nb"))
            rows.append({"recording": name, "condition": condition, "kind": kind, "pesq": round(mos, 3),
                         "score": round(call_score(degraded[:n]), 4)})
    per_kind = {kind: round(spearman([r["pesq"] for r in rows if r["kind"] in (kind, "clean")],
                                     [r["score"] for r in rows if r["kind"] in (kind, "clean")]), 3)
                for kind in sorted(set(CONDITIONS.values()) - {"clean"})}
    conditions = {}
    for condition in CONDITIONS:
        subset = [r for r in rows if r["condition"] == condition]
        conditions[condition] = {"pesq": round(float(np.mean([r["pesq"] for r in subset])), 2),
                                 "score": round(float(np.mean([r["score"] for r in subset])), 3),
                                 "tiers": sorted({tier_for(r["score"]) for r in subset})}
    noisy = [r for r in rows if r["condition"] in NOISY_BELOW_HIGH]
    return {
        "benchmark": "quality_human",
        "speech": "human (LibriVox and pocketsphinx recordings en; Tux Paint descriptions es/fr), 8 kHz μ-law",
        "quick": quick,
        "files": len(rows),
        "spearman_rho": round(spearman([r["pesq"] for r in rows], [r["score"] for r in rows]), 3),
        "spearman_rho_per_kind": per_kind,
        "noisy_0_5dB_high_tier": sum(tier_for(r["score"]) == "high" for r in noisy),
        "noisy_0_5dB_files": len(noisy),
        "conditions": conditions,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    """Run standalone and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    result = run(quick=parser.parse_args().quick)
    print(json.dumps({k: v for k, v in result.items() if k != "conditions"}, indent=2, ensure_ascii=False))
    for name, row in result.get("conditions", {}).items():
        print(f"  {name:18s} pesq={row['pesq']:.2f} score={row['score']:.3f} {'/'.join(row['tiers'])}")


if __name__ == "__main__":
    main()
