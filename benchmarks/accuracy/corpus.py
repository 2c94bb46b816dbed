"""A labelled speech corpus built at run time with espeak-ng, and the degradations applied to it.

Speech comes from espeak-ng in several voices and languages; labels are
per 20 ms frame from the clean signal's energy. Degradations are the ones a
phone call suffers: additive noise at a given SNR (white, pink, brown and a
non-stationary "street" noise), the telephone band (300-3400 Hz, 8 kHz,
G.711 μ-law), clipping, packet loss (lost 20 ms frames replaced by zeros),
low bandwidth and low level. Everything is seeded: the same seed gives the
same corpus.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
import soxr

__all__ = [
    "FRAME_S",
    "Signal",
    "Utterance",
    "VOICES",
    "SENTENCES",
    "Recording",
    "add_noise",
    "bandlimit",
    "clip",
    "frame_levels_db",
    "have_espeak",
    "labels_for",
    "labels_p56",
    "lowpass",
    "make_noise",
    "mulaw_roundtrip",
    "packet_loss",
    "recording",
    "speak",
    "telephone",
]

Signal = npt.NDArray[np.float64]
FRAME_S = 0.02

SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "Hello, I would like to check the balance of my account.",
        "Can you tell me when the next delivery is due?",
        "My card was declined at the shop this morning.",
        "Please transfer me to someone who can help with billing.",
        "Yes, that is right, thank you very much.",
        "I moved house last month and need to update my address.",
    ),
    "es": (
        "Hola, quisiera consultar el saldo de mi cuenta.",
        "¿Puede decirme cuándo llega el próximo pedido?",
        "Mi tarjeta fue rechazada esta mañana en la tienda.",
    ),
    "fr": (
        "Bonjour, je voudrais connaître le solde de mon compte.",
        "Pouvez-vous me dire quand arrive la prochaine livraison?",
        "Ma carte a été refusée ce matin au magasin.",
    ),
    "de": (
        "Guten Tag, ich möchte den Kontostand prüfen.",
        "Können Sie mir sagen, wann die nächste Lieferung kommt?",
        "Meine Karte wurde heute Morgen im Laden abgelehnt.",
    ),
}

# (espeak-ng voice, language of SENTENCES, words per minute, pitch 0-99)
VOICES: tuple[tuple[str, str, int, int], ...] = (
    ("en-us", "en", 160, 50),
    ("en-gb+f3", "en", 150, 60),
    ("en-gb-scotland+m3", "en", 175, 40),
    ("en-us+f4", "en", 140, 70),
    ("es+m2", "es", 160, 45),
    ("fr-fr+f2", "fr", 155, 55),
    ("de+m4", "de", 150, 35),
)


def have_espeak() -> bool:
    """True when the espeak-ng binary is on PATH."""
    return shutil.which("espeak-ng") is not None


@cache
def speak(text: str, voice: str, wpm: int = 160, pitch: int = 50, rate: int = 16000) -> Signal:
    """espeak-ng speech as float samples in [-1, 1] at ``rate``, leading/trailing silence trimmed."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    samples = np.frombuffer(wav[44:], dtype="<i2").astype(np.float64) / 32768.0
    samples = np.asarray(soxr.resample(samples, 22050, rate), dtype=np.float64)
    loud = np.flatnonzero(np.abs(samples) > 0.005)
    return samples[loud[0] : loud[-1] + 1] if loud.size else samples


@dataclass(frozen=True, slots=True)
class Utterance:
    """Where one utterance sits in a recording (seconds)."""

    start: float
    end: float
    language: str


@dataclass(frozen=True, slots=True)
class Recording:
    """Clean speech with silences between utterances, and where the speech is."""

    clean: Signal
    rate: int
    utterances: tuple[Utterance, ...]


def recording(seed: int, utterances: int = 3, rate: int = 16000, level_dbfs: float = -20.0) -> Recording:
    """Utterances in random voices separated by 0.4-1.5 s of silence, normalised to ``level_dbfs``."""
    rng = np.random.default_rng(seed)
    parts: list[Signal] = [np.zeros(int(rng.uniform(0.5, 1.2) * rate))]
    placed: list[Utterance] = []
    cursor = parts[0].size
    for _ in range(utterances):
        voice, language, wpm, pitch = VOICES[int(rng.integers(len(VOICES)))]
        sentences = SENTENCES[language]
        speech = speak(sentences[int(rng.integers(len(sentences)))], voice, wpm, pitch, rate)
        placed.append(Utterance(cursor / rate, (cursor + speech.size) / rate, language))
        gap = np.zeros(int(rng.uniform(0.4, 1.5) * rate))
        parts += [speech, gap]
        cursor += speech.size + gap.size
    clean = np.concatenate(parts)
    active = _active_rms(clean, rate)
    clean *= 10 ** (level_dbfs / 20) / max(active, 1e-9)
    return Recording(clean, rate, tuple(placed))


def frame_levels_db(signal: Signal, rate: int) -> Signal:
    """Level of each 20 ms frame in dB full scale (-120 for digital silence)."""
    step = int(rate * FRAME_S)
    frames = signal[: signal.size // step * step].reshape(-1, step)
    power = np.mean(frames**2, axis=1)
    return np.asarray(10 * np.log10(power + 1e-12), dtype=np.float64)


def labels_for(clean: Signal, rate: int, below_peak_db: float = 40.0) -> npt.NDArray[np.bool_]:
    """Ground truth per 20 ms frame: the clean signal is within ``below_peak_db`` of its loudest frame."""
    levels = frame_levels_db(clean, rate)
    return np.asarray(levels > levels.max() - below_peak_db, dtype=np.bool_)


def labels_p56(
    clean: Signal, rate: int, below_active_db: float = 15.9, hangover_s: float = 0.2
) -> npt.NDArray[np.bool_]:
    """Ground truth per 20 ms frame after ITU-T P.56: active when the clean level is within
    15.9 dB of the active speech level, held for 200 ms after activity (the standard's hangover)."""
    levels = frame_levels_db(clean, rate)
    threshold = float(levels.max()) - 40.0
    for _ in range(20):  # the active level and its threshold define each other: iterate to the fixed point
        active_level = 10 * np.log10(np.mean(10 ** (levels[levels > threshold] / 10)))
        threshold = float(active_level) - below_active_db
    active = levels > threshold
    hold = round(hangover_s / FRAME_S)
    labels = active.copy()
    remaining = 0
    for i, on in enumerate(active):
        if on:
            remaining = hold
        elif remaining > 0:
            labels[i] = True
            remaining -= 1
    return labels


def _active_rms(signal: Signal, rate: int) -> float:
    """RMS over the frames that hold speech (the reference for an SNR)."""
    step = int(rate * FRAME_S)
    frames = signal[: signal.size // step * step].reshape(-1, step)
    speech = frames[labels_for(signal, rate)]
    return float(np.sqrt(np.mean(speech**2))) if speech.size else 0.0


def make_noise(kind: str, samples: int, rate: int, rng: np.random.Generator) -> Signal:
    """Unit-RMS noise: ``white``, ``pink`` (1/f), ``brown`` (1/f², car-like) or ``street`` (modulated pink)."""
    white = rng.standard_normal(samples)
    if kind == "white":
        noise = white
    else:
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(samples, 1 / rate)
        freqs[0] = freqs[1]
        exponent = 1.0 if kind in ("pink", "street") else 2.0
        if kind not in ("pink", "street", "brown"):
            raise ValueError(f"unknown noise {kind!r}")
        noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), samples)
        if kind == "street":
            # Passing traffic: the level swells and fades over seconds (non-stationary).
            t = np.arange(samples) / rate
            envelope = 1.0 + 0.8 * np.sin(2 * np.pi * 0.23 * t + rng.uniform(0, 6.3))
            noise = noise * envelope
    return np.asarray(noise / np.sqrt(np.mean(noise**2)), dtype=np.float64)


def add_noise(clean: Signal, rate: int, snr_db: float, kind: str, rng: np.random.Generator) -> Signal:
    """``clean`` plus ``kind`` noise so that active speech is ``snr_db`` above the noise."""
    noise = make_noise(kind, clean.size, rate, rng)
    return np.asarray(clean + noise * _active_rms(clean, rate) / 10 ** (snr_db / 20), dtype=np.float64)


def bandlimit(signal: Signal, rate: int, low_hz: float, high_hz: float) -> Signal:
    """Brick-wall band-pass in the frequency domain."""
    spectrum = np.fft.rfft(signal)
    freqs = np.fft.rfftfreq(signal.size, 1 / rate)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0
    return np.asarray(np.fft.irfft(spectrum, signal.size), dtype=np.float64)


def lowpass(signal: Signal, rate: int, cutoff_hz: float) -> Signal:
    """Remove everything above ``cutoff_hz`` (a narrow codec or a bad line)."""
    return bandlimit(signal, rate, 0.0, cutoff_hz)


def _mulaw_encode(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.uint8]:
    """G.711 μ-law encoding on the 14-bit magnitude (as the ITU reference and the stdlib do)."""
    x = pcm.astype(np.int32) >> 2
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 8158) + 0x21
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 5
    mantissa = (magnitude >> (exponent + 1)) & 0x0F
    return np.asarray(~(sign | (exponent << 4) | mantissa) & 0xFF, dtype=np.uint8)


def _mulaw_decode(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
    """G.711 μ-law decoding."""
    u = (~codes.astype(np.int32)) & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = ((((u & 0x0F) << 3) + 0x84) << exponent) - 0x84
    return np.asarray(np.where(u & 0x80, -magnitude, magnitude), dtype=np.int16)


def to_pcm16(signal: Signal) -> npt.NDArray[np.int16]:
    """Float [-1, 1] to PCM16 with saturation."""
    return np.asarray(np.clip(np.round(signal * 32768), -32768, 32767), dtype=np.int16)


def mulaw_roundtrip(signal: Signal) -> Signal:
    """What G.711 μ-law does to a signal (8-bit companding)."""
    return _mulaw_decode(_mulaw_encode(to_pcm16(signal))).astype(np.float64) / 32768.0


def telephone(signal: Signal, rate: int) -> Signal:
    """The telephone channel: 300-3400 Hz, resampled to 8 kHz, through μ-law."""
    banded = bandlimit(signal, rate, 300.0, 3400.0)
    narrow = np.asarray(soxr.resample(banded, rate, 8000), dtype=np.float64) if rate != 8000 else banded
    return mulaw_roundtrip(narrow)


def clip(signal: Signal, gain_db: float, ceiling: float = 0.999) -> Signal:
    """Amplify by ``gain_db`` and saturate at ``ceiling`` (an overdriven microphone)."""
    return np.asarray(np.clip(signal * 10 ** (gain_db / 20), -ceiling, ceiling), dtype=np.float64)


def packet_loss(signal: Signal, rate: int, loss: float, rng: np.random.Generator, burst: float = 0.3) -> Signal:
    """Zero out 20 ms frames with a Gilbert-style bursty loss process at mean ``loss`` rate."""
    step = int(rate * FRAME_S)
    out = signal.copy()
    lost = False
    # P(stay lost) = burst; P(enter loss) chosen so the stationary loss rate is ``loss``.
    enter = loss * (1 - burst) / max(1e-9, 1 - loss)
    for start in range(0, signal.size, step):
        lost = rng.random() < (burst if lost else enter)
        if lost:
            out[start : start + step] = 0.0
    return out
