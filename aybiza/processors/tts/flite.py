"""CMU Flite: the lightest English voice, one small subprocess per clause.

Flite writes its WAV only when the whole utterance is done, so the text is
cut at clause punctuation and each clause runs on its own: the first audio
waits for the first clause only. ``slt`` (16 kHz) sounds best; ``kal`` is an
8 kHz diphone voice, already at telephone rate.
"""

from __future__ import annotations

import subprocess
from collections.abc import Generator
from pathlib import Path

from ...errors import ConfigError
from .base import AudioChunk, require_binary, split_clauses, stream_wav_command

__all__ = ["FliteSynthesizer"]


def _installed_voices(binary: str) -> frozenset[str]:
    """Voices compiled into flite (``flite -lv`` prints "Voices available: kal slt ...")."""
    listing = subprocess.run([binary, "-lv"], capture_output=True, text=True, check=False).stdout
    return frozenset(listing.partition(":")[2].split())


class FliteSynthesizer:
    """Flite with a built-in voice (``slt``, ``kal``, ``rms``, ``awb``...) or a ``.flitevox`` file."""

    __slots__ = ("_binary", "voice")

    name = "flite"

    def __init__(self, voice: str = "slt", *, binary: str = "flite") -> None:
        self._binary = require_binary(binary, "flite")
        if voice.endswith(".flitevox"):
            if not Path(voice).is_file():
                raise ConfigError(f"flite voice file {voice} does not exist")
        elif voice not in (installed := _installed_voices(self._binary)):
            raise ConfigError(f"flite has no voice {voice!r}; it has {', '.join(sorted(installed))}")
        self.voice = voice

    def synthesize(self, text: str, language: str) -> Generator[AudioChunk, None, None]:
        """Yield ``text`` (English; ``language`` is ignored) clause by clause."""
        for clause in split_clauses(text):
            argv = [self._binary, "-voice", self.voice, "-t", clause, "-o", "/dev/stdout"]
            yield from stream_wav_command(argv, self.name)
