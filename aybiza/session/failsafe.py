"""The failsafe voice: apologies and goodbyes in a local voice, rendered ahead so a failure never means silence.

Whatever breaks — the recogniser, the cloud voice, every model region, the
agent's configuration, a stage — the caller must hear a short apology and
what happens next. That audio cannot depend on the provider that failed, so
it is spoken by the process's local voice (piper, or espeak-ng: always
installed, no network) and kept rendered: :meth:`FailsafeVoice.warm` renders
the default agent's texts at startup, and every other text is rendered once,
the first time it is needed, then reused. Calls that need the same text at
once (a region failing fails many turns together) share that one rendering:
one worker thread synthesises while the others wait for it, instead of a
thread each stealing the loop's core at the moment it is already behind.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import anyio
import anyio.to_thread

from ..codecs import resample
from ..processors.tts.base import SpeechSynthesizer
from .rendered_cache import RenderedCache

__all__ = ["FailsafeVoice"]

_MAX_RENDERED = 64


class FailsafeVoice:
    """Texts rendered to PCM16 by a local voice, cached by (text, language)."""

    def __init__(self, voice: SpeechSynthesizer, other_languages: SpeechSynthesizer | None = None, *,
                 cache: RenderedCache | None = None) -> None:
        """``cache`` keeps renderings on disk across restarts (voices with an ``identity`` only)."""
        self.voice = voice
        self.cache = cache
        self.other_languages = other_languages
        self._rendered: OrderedDict[tuple[str, str], tuple[bytes, int]] = OrderedDict()
        self._rendering: dict[tuple[str, str], anyio.Event] = {}  # renderings in progress (event loop only)
        self._lock = threading.Lock()

    def _engine(self, language: str) -> SpeechSynthesizer:
        english = language.replace("_", "-").split("-", 1)[0].lower() == "en"
        return self.voice if english or self.other_languages is None else self.other_languages

    def render(self, text: str, language: str = "en") -> tuple[bytes, int]:
        """``text`` as PCM16 mono and its rate (blocking the first time: call it from a thread)."""
        key = (" ".join(text.split()), language)
        with self._lock:
            found = self._rendered.get(key)
            if found is not None:
                self._rendered.move_to_end(key)
                return found
        engine = self._engine(language)
        identity = getattr(engine, "identity", None) if self.cache is not None else None
        stored = self.cache.load(identity, key[0], language) if self.cache is not None and identity else None
        if stored is not None:
            rendered = stored
        else:
            rendered = self._synthesize(engine, key[0], language)
            if self.cache is not None and identity:
                self.cache.store(identity, key[0], language, *rendered)
        with self._lock:
            self._rendered[key] = rendered
            while len(self._rendered) > _MAX_RENDERED:
                self._rendered.popitem(last=False)
        return rendered

    @staticmethod
    def _synthesize(engine: SpeechSynthesizer, text: str, language: str) -> tuple[bytes, int]:
        rate = 0
        parts: list[bytes] = []
        for pcm, chunk_rate in engine.synthesize(text, language):
            if rate and chunk_rate != rate:
                pcm = resample(pcm, chunk_rate, rate)
            rate = rate or chunk_rate
            parts.append(pcm)
        return b"".join(parts), rate or 16000

    async def render_async(self, text: str, language: str = "en") -> tuple[bytes, int]:
        """:meth:`render` off the event loop (at once when it is rendered already; one rendering per text)."""
        key = (" ".join(text.split()), language)
        while True:
            found = self._rendered.get(key)
            if found is not None:
                return found
            rendering = self._rendering.get(key)
            if rendering is None:
                break
            await rendering.wait()  # if that rendering failed, the next waiter tries again
        done = self._rendering[key] = anyio.Event()
        try:
            return await anyio.to_thread.run_sync(self.render, text, language)
        finally:
            del self._rendering[key]
            done.set()

    def warm(self, *texts: str, language: str = "en") -> None:
        """Render ``texts`` now (blocking; at startup)."""
        for text in texts:
            self.render(text, language)
