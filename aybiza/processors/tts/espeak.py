"""espeak-ng formant TTS: every language the call may switch to, streamed from a subprocess.

``espeak-ng --stdout`` writes a WAV header and then samples as it
synthesizes, so the first chunk arrives within a few milliseconds of the
process starting. The voice for a call's language comes from ``voice_map``
(full tag, then primary subtag), then from espeak-ng's own list of
languages, and finally the English voice.
"""

from __future__ import annotations

import subprocess
from collections.abc import Generator, Mapping

from ...errors import ConfigError
from .base import AudioChunk, primary_language, require_binary, stream_wav_command

__all__ = ["EspeakSynthesizer", "DEFAULT_VOICES"]

DEFAULT_VOICES: Mapping[str, str] = {
    "en": "en-us",
    "en-us": "en-us",
    "en-gb": "en-gb",
    "es": "es",
    "es-419": "es-419",
    "fr": "fr-fr",
    "de": "de",
    "it": "it",
    "pt": "pt",
    "pt-br": "pt-br",
    "nl": "nl",
    "pl": "pl",
    "sv": "sv",
    "da": "da",
    "nb": "nb",
    "no": "nb",
    "fi": "fi",
    "cs": "cs",
    "ro": "ro",
    "ru": "ru",
    "uk": "uk",
    "el": "el",
    "tr": "tr",
    "ar": "ar",
    "he": "he",
    "hi": "hi",
    "ja": "ja",
    "ko": "ko",
    "zh": "cmn",
    "vi": "vi",
    "id": "id",
}
"""Language tag (lower case) -> espeak-ng voice."""


def _installed_languages(binary: str) -> frozenset[str]:
    """Language names espeak-ng accepts for ``-v`` (second column of ``--voices``)."""
    listing = subprocess.run([binary, "--voices"], capture_output=True, text=True, check=False).stdout
    return frozenset(line.split()[1].lower() for line in listing.splitlines()[1:] if len(line.split()) > 1)


class EspeakSynthesizer:
    """espeak-ng at ``rate_wpm`` words per minute; PCM16 at 22050 Hz."""

    __slots__ = ("_binary", "_voices", "_installed", "_rate_wpm")

    name = "espeak-ng"

    def __init__(
        self,
        voice_map: Mapping[str, str] | None = None,
        *,
        rate_wpm: int = 165,
        binary: str = "espeak-ng",
    ) -> None:
        self._binary = require_binary(binary, "espeak-ng")
        self._installed = _installed_languages(self._binary)
        voices = {tag.lower(): voice for tag, voice in (voice_map or DEFAULT_VOICES).items()}
        # A mapped voice may carry a variant ("en-us+f3"); the language part must exist.
        unknown = sorted(v for v in voices.values() if v.split("+", 1)[0].lower() not in self._installed)
        if unknown:
            raise ConfigError(f"espeak-ng has no voice {', '.join(unknown)}; see `espeak-ng --voices`")
        self._voices = voices
        self._rate_wpm = rate_wpm

    def voice_for(self, language: str) -> str:
        """The espeak-ng voice that speaks ``language`` (English when nothing fits)."""
        tag = language.replace("_", "-").lower()
        base = primary_language(tag)
        for key in (tag, base):
            if key in self._voices:
                return self._voices[key]
        for key in (tag, base):
            if key in self._installed:
                return key
        return self._voices.get("en", "en-us")

    def synthesize(self, text: str, language: str) -> Generator[AudioChunk, None, None]:
        """Stream ``text`` spoken in ``language``; chunks come as espeak-ng writes them."""
        argv = [
            self._binary, "--stdout", "-b", "1",  # -b 1: the text is UTF-8 whatever the locale
            "-v", self.voice_for(language), "-s", str(self._rate_wpm),
            "--", " ".join(text.split()),
        ]  # fmt: skip
        return stream_wav_command(argv, self.name)
