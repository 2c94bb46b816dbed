"""Human recordings with their texts, read from the fetched packages (see the package docstring for licences).

Every clip is a :class:`Clip`: 16 kHz mono floats (decoded on first use), its
language, the text that was read, where it comes from and ``human=True``.
Tux Paint's stamp texts were edited after some recordings were made, and
some hold symbols or numbers a reader says differently ("$1.00"): clips whose
text has digits or symbols are left out, and :func:`checked` drops clips
whose clean recording a recogniser cannot match to its text at all (a text
changed after recording), keeping the decision in the cache.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .fetch import Signal, cache_dir, debian_package, decode, pypi_file

__all__ = ["AlignedClip", "Clip", "checked", "conversation", "librivox", "normalise", "pocketsphinx_en",
           "tuxpaint", "words_of", "ktuberling"]

POCKETSPHINX = "pocketsphinx==5.1.1"
PYANNOTE = "pyannote.audio==4.0.7"


@dataclass(eq=False)
class Clip:
    """One recording and what was said in it."""

    id: str
    language: str
    text: str
    path: Path
    source: str
    human: bool = True
    raw_rate: int | None = None
    _audio: Signal | None = field(default=None, repr=False)

    def audio(self) -> Signal:
        """16 kHz mono samples in [-1, 1] (decoded once)."""
        if self._audio is None:
            self._audio = decode(self.path, raw_rate=self.raw_rate)
        return self._audio


@dataclass(eq=False)
class AlignedClip(Clip):
    """A clip with word timings (seconds): ``(word, start, end)``."""

    words: tuple[tuple[str, float, float], ...] = ()


def normalise(text: str) -> str:
    """Lower case, no punctuation, single spaces (for word error rates)."""
    text = unicodedata.normalize("NFC", text.lower()).replace("’", "'")
    text = re.sub(r"[^\w' ]+", " ", text)
    return " ".join(text.replace("_", " ").split())


def words_of(text: str) -> list[str]:
    """The normalised words of ``text``."""
    return normalise(text).split()


_READABLE = re.compile(r"^[^\d$%&@#/()\[\]{}<>=+*|~^]+$")


def tuxpaint(language: str) -> list[Clip]:
    """Tux Paint stamp descriptions read aloud in ``language`` (en, es, fr), with the stamp file's text."""
    root = debian_package("tuxpaint-stamps-default") / "usr/share/tuxpaint/stamps"
    suffix = "_desc.ogg" if language == "en" else f"_desc_{language}.ogg"
    clips = []
    for path in sorted(root.rglob(f"*{suffix}")):
        text_file = path.with_name(path.name[: -len(suffix)] + ".txt")
        if not text_file.is_file():
            continue
        lines = text_file.read_text(encoding="utf-8", errors="replace").splitlines()
        if language == "en":
            text = lines[0].strip() if lines else ""
        else:
            text = next((line.split("=", 1)[1].strip() for line in lines if line.startswith(f"{language}.utf8=")), "")
        text = text.strip(" .|")
        if text and _READABLE.match(text) and len(text.split()) >= 2:
            clips.append(Clip(f"tuxpaint/{language}/{path.stem}", language, text, path, "tuxpaint-stamps-default"))
    return clips


def librivox() -> list[AlignedClip]:
    """Five LibriVox sentences (Sense and Sensibility) from pocketsphinx's tests, with word alignments."""
    root = pypi_file(POCKETSPHINX, sdist=True)
    folder = next(root.glob("pocketsphinx-*/test/data/librivox"))
    clips = []
    for path in sorted(folder.glob("sense_and_sensibility_*.json")):
        if path.name.count(".") > 1:
            continue  # phone/state alignments
        segments = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        words = tuple((re.sub(r"\(\d+\)$", "", w["t"]), float(w["b"]), float(w["b"]) + float(w["d"]))
                      for segment in segments for w in segment["w"] if not w["t"].startswith("<"))
        text = " ".join(segment["t"] for segment in segments)
        clips.append(AlignedClip(f"librivox/{path.stem}", "en", text, path.with_suffix(".wav"),
                                 "pocketsphinx test data (LibriVox)", words=words))
    return clips


def pocketsphinx_en() -> list[Clip]:
    """pocketsphinx's other English test recordings with transcripts ("go forward ten meters", playing cards)."""
    root = next(pypi_file(POCKETSPHINX, sdist=True).glob("pocketsphinx-*/test/data"))
    clips = [Clip("pocketsphinx/goforward", "en", "go forward ten meters", root / "goforward.raw",
                  "pocketsphinx test data", raw_rate=16000)]
    for line in (root / "cards" / "cards.transcription").read_text().splitlines():
        match = re.match(r"<s>(.*)</s>\s*\((\w+)\)", line.strip())
        if match:
            wav = root / "cards" / f"{match[2]}.wav"
            clips.append(Clip(f"pocketsphinx/cards/{match[2]}", "en", match[1].strip(), wav, "pocketsphinx test data"))
    return clips


def conversation() -> tuple[Signal, list[tuple[str, float, float]]]:
    """pyannote.audio's sample: a two-speaker conversation and its turns ``(speaker, start, end)``."""
    root = pypi_file(PYANNOTE, sdist=False) / "pyannote/audio/sample"
    turns = []
    for line in (root / "sample.rttm").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "SPEAKER":
            start, duration = float(parts[3]), float(parts[4])
            turns.append((parts[7], start, start + duration))
    return decode(root / "sample.wav"), turns


def ktuberling(language: str) -> list[Clip]:
    """Single words read by volunteers for KTuberling (the word is the file's name)."""
    root = debian_package("ktuberling-data") / "usr/share/ktuberling/sounds"
    theme = root / f"{language}.soundtheme"
    if not theme.is_file():
        return []
    files = sorted(set(re.findall(r'file="([^"]+)"', theme.read_text(encoding="utf-8"))))
    return [Clip(f"ktuberling/{name}", language, Path(name).stem.replace("_", " "), root / name, "ktuberling-data")
            for name in files if (root / name).is_file()]


def checked(clips: list[Clip], transcribe: Callable[[Clip], str], *, max_wer: float = 0.6, tag: str) -> list[Clip]:
    """The clips whose clean recording matches their text (word error rate <= ``max_wer``); decisions cached.

    This drops texts edited after the recording. It runs on the clean 16 kHz
    audio; what the benchmarks measure is the telephone band, with noise.
    """
    from benchmarks.corpus.score import word_error_rate

    path = cache_dir() / "checks" / f"{tag}.json"
    known: dict[str, bool] = json.loads(path.read_text()) if path.is_file() else {}
    for clip in clips:
        if clip.id not in known:
            known[clip.id] = word_error_rate(clip.text, transcribe(clip)) <= max_wer
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(known, indent=0, sort_keys=True))
    return [clip for clip in clips if known[clip.id]]
