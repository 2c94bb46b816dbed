"""Real-world noise under human speech, and the telephone channel.

Noise kinds: ``white`` (a hiss), ``babble`` (six other volunteers from the
stamp collection talking at once, in several languages), ``music`` (the
collection's cello, violin and drum kit recordings), ``engine`` (its fire
truck and bathyscape recordings). Impairments: ``clipping``, bursty
``loss`` of 20 ms packets, ``gsm`` (the GSM 06.10 codec through sox: codec
artefacts) and the 8 kHz μ-law telephone channel every case ends in
(:func:`telephone`, from ``benchmarks/accuracy/corpus.py``).
"""

from __future__ import annotations

import subprocess
from functools import cache

import numpy as np

from benchmarks.accuracy.corpus import clip as overdrive
from benchmarks.accuracy.corpus import frame_levels_db, mulaw_roundtrip, packet_loss, telephone, to_pcm16

from .fetch import Signal, debian_package, decode
from .human import tuxpaint

__all__ = ["NOISES", "active_rms", "gsm", "impair", "mix", "noise", "overdrive", "packet_loss", "telephone",
           "mulaw_roundtrip", "to_pcm16"]

RATE = 16000
NOISES = ("white", "babble", "music", "engine")
_STAMP_SOUNDS = {"music": ("hobbies/music/string/cello.ogg", "hobbies/music/string/violin.ogg",
                           "hobbies/music/percussion/drumkit.ogg"),
                 "engine": ("vehicles/emergency/firetruck.ogg", "vehicles/ship/cartoon/bathyscape.ogg")}


def active_rms(signal: Signal, rate: int = RATE) -> float:
    """RMS over the 20 ms frames within 40 dB of the loudest (the speech, not the pauses)."""
    levels = frame_levels_db(signal, rate)
    step = int(rate * 0.02)
    frames = signal[: levels.size * step].reshape(-1, step)[levels > levels.max() - 40]
    return float(np.sqrt(np.mean(frames**2))) if frames.size else 0.0


@cache
def _babble() -> Signal:
    """Six talkers at once: stamp descriptions in fr, es and en, each concatenated to 20 s, summed."""
    talkers = []
    for language, offset in (("fr", 0), ("es", 7), ("en", 3), ("fr", 40), ("es", 60), ("fr", 90)):
        clips = tuxpaint(language)
        parts, total, index = [], 0, offset
        while total < 20 * RATE:
            audio = clips[index % len(clips)].audio()
            parts.append(audio / max(active_rms(audio), 1e-6))
            total += audio.size
            index += 11
        talkers.append(np.concatenate(parts)[: 20 * RATE])
    return np.asarray(np.sum(talkers, axis=0), dtype=np.float64)


@cache
def _stamp_noise(kind: str) -> Signal:
    root = debian_package("tuxpaint-stamps-default") / "usr/share/tuxpaint/stamps"
    parts = [decode(root / name) for name in _STAMP_SOUNDS[kind]]
    return np.concatenate([p / max(float(np.sqrt(np.mean(p**2))), 1e-6) for p in parts])


def noise(kind: str, samples: int, rng: np.random.Generator) -> Signal:
    """``samples`` of unit-RMS noise of ``kind`` (a random stretch of the recording, looped if short)."""
    if kind == "white":
        source = rng.standard_normal(samples)
    else:
        recording = _babble() if kind == "babble" else _stamp_noise(kind)
        start = int(rng.integers(recording.size))
        source = np.resize(np.roll(recording, -start), samples)
    return np.asarray(source / max(float(np.sqrt(np.mean(source**2))), 1e-9), dtype=np.float64)


def mix(clean: Signal, kind: str, snr_db: float, rng: np.random.Generator) -> Signal:
    """``clean`` (16 kHz) with ``kind`` noise so that the speech is ``snr_db`` above it."""
    return np.asarray(clean + noise(kind, clean.size, rng) * active_rms(clean) / 10 ** (snr_db / 20),
                      dtype=np.float64)


def gsm(signal: Signal, rate: int = 8000) -> Signal:
    """Through the GSM 06.10 full-rate codec and back (sox), at 8 kHz."""
    raw = to_pcm16(signal).tobytes()
    pcm = ["-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r", str(rate)]
    coded = subprocess.run(["sox", "-V1", *pcm, "-", "-t", "gsm", "-"], input=raw, check=True,
                           capture_output=True).stdout
    decoded = subprocess.run(["sox", "-V1", "-t", "gsm", "-r", str(rate), "-", *pcm, "-"], input=coded, check=True,
                             capture_output=True).stdout
    out = np.frombuffer(decoded, dtype="<i2").astype(np.float64) / 32768.0
    return np.resize(out, signal.size) if out.size != signal.size else out


def impair(clean: Signal, condition: str, rng: np.random.Generator) -> Signal:
    """``clean`` 16 kHz speech through a named condition, then the phone line: 8 kHz μ-law samples.

    ``clean``; ``<noise>_<snr>dB``; ``clip_<gain>dB``; ``loss_<percent>pct``; ``gsm``; ``gsm_babble_<snr>dB``.
    """
    if condition == "clean":
        return telephone(clean, RATE)
    kind, _, amount = condition.partition("_")
    if kind in NOISES:
        return telephone(mix(clean, kind, float(amount.removesuffix("dB")), rng), RATE)
    if kind == "clip":
        return telephone(overdrive(clean / max(float(np.abs(clean).max()), 1e-6) * 0.5,
                                   float(amount.removesuffix("dB"))), RATE)
    if kind == "loss":
        return packet_loss(telephone(clean, RATE), 8000, float(amount.removesuffix("pct")) / 100, rng)
    if kind == "gsm":
        line = telephone(clean if not amount else mix(clean, "babble", float(amount.split("_")[1][:-2]), rng), RATE)
        return mulaw_roundtrip(gsm(line))
    raise ValueError(f"unknown condition {condition!r}")
