"""Which answers may be cached, under which keys; how cached answers and audio are stored.

An answer is reused only when it cannot depend on the conversation before it
or on who is calling:

* the agent allows it (``cache_answers: true``, the default);
* the turn is context-free: the caller's first turn, a turn answered by a
  stateless model (the FAQ responder), or an *FAQ-like* question — its
  normalized text is one of the agent's FAQ phrasings;
* it carries nothing personal: no run of 4+ digits (phone, card, account or
  booking numbers, dates of birth), no e-mail address;
* it is short (at most ``max_words`` words after normalization).

The key is the SHA-256 of the normalized transcript, the agent's id and
config fingerprint (an edited agent never gets a stale answer), the model
tier and the language. TTS audio is keyed by (text, voice, language, format).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from ..agents import AgentConfig

__all__ = [
    "ANSWER_NAMESPACE",
    "TTS_NAMESPACE",
    "AnswerPolicy",
    "CachedAnswer",
    "agent_fingerprint",
    "answer_key",
    "decode_audio",
    "encode_audio",
    "has_personal_data",
    "normalize_transcript",
    "tts_key",
]

ANSWER_NAMESPACE = "llm"
"""Cache namespace of model answers."""

TTS_NAMESPACE = "tts"
"""Cache namespace of synthesized audio."""

_KEY_VERSION = "v1"
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_FILLERS = frozenset("um umm uh uhh uhm er erm ah hmm mm mhm".split())
# Padding that does not change the question when it opens or closes the turn.
_LEADING = frozenset("hi hello hey so well okay ok oh yes yeah right".split())
_TRAILING = ("please", "thanks", "thank you", "cheers")
_DIGIT_RUN = re.compile(r"\d(?:[\s\-./]?\d){3,}")
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")


def normalize_transcript(text: str) -> str:
    """Lower case, punctuation and fillers gone, opening/closing padding stripped, spaces collapsed.

    ``"Um, hi! What are your opening hours, please?"`` -> ``"what are your opening hours"``.
    """
    words = [w for w in _WORD.findall(text.casefold()) if w not in _FILLERS]
    while len(words) > 1 and words[0] in _LEADING:
        words.pop(0)
    changed = True
    while changed and len(words) > 1:
        changed = False
        for tail in _TRAILING:
            parts = tail.split()
            if len(words) > len(parts) and words[-len(parts):] == parts:
                del words[-len(parts):]
                changed = True
    return " ".join(words)


def has_personal_data(text: str) -> bool:
    """True if ``text`` holds a run of 4+ digits or an e-mail address (never cache it)."""
    return bool(_DIGIT_RUN.search(text) or _EMAIL.search(text))


@lru_cache(maxsize=256)
def agent_fingerprint(agent: AgentConfig) -> str:
    """A short hash of the agent's whole config: editing the agent changes every answer key."""
    return hashlib.sha256(agent.model_dump_json().encode()).hexdigest()[:16]


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join((_KEY_VERSION, *parts)).encode()).hexdigest()


def answer_key(normalized: str, agent_id: str, fingerprint: str, tier: str, language: str) -> str:
    """Cache key of an answer: hash of normalized transcript + agent (id, version) + tier + language."""
    return _digest("answer", normalized, agent_id, fingerprint, tier, language.lower())


def tts_key(text: str, voice: str, language: str, fmt: str = "pcm16le") -> str:
    """Cache key of synthesized audio: hash of (exact text, voice, language, audio format)."""
    return _digest("tts", " ".join(text.split()), voice, language.lower(), fmt)


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A stored answer: the sentences the agent said and their language."""

    sentences: tuple[str, ...]
    language: str

    def encode(self) -> bytes:
        """Compact JSON bytes."""
        return json.dumps({"s": list(self.sentences), "l": self.language}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> CachedAnswer | None:
        """Inverse of :meth:`encode`; None if ``raw`` is not a stored answer."""
        try:
            data = json.loads(raw)
            sentences = tuple(str(s) for s in data["s"])
            return cls(sentences, str(data["l"])) if sentences else None
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(slots=True)
class AnswerPolicy:
    """Decides whether a caller turn's answer may be served from or stored in the cache."""

    agent: AgentConfig
    stateless_model: bool = False
    max_words: int = 40
    tier: str = "local"
    _faq_phrasings: frozenset[str] = field(init=False)
    _fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        self._faq_phrasings = frozenset(
            normalize_transcript(q) for faq in self.agent.faqs for q in faq.questions
        )
        self._fingerprint = agent_fingerprint(self.agent)

    @property
    def enabled(self) -> bool:
        """The agent allows answer caching."""
        return self.agent.cache_answers

    def faq_like(self, normalized: str) -> bool:
        """The normalized turn is one of the agent's FAQ phrasings."""
        return normalized in self._faq_phrasings

    def key_for(self, text: str, language: str, *, first_turn: bool) -> str | None:
        """The cache key for this turn, or None when its answer must not be cached."""
        if not self.agent.cache_answers or has_personal_data(text):
            return None
        normalized = normalize_transcript(text)
        if not normalized or len(normalized.split()) > self.max_words:
            return None
        if not (first_turn or self.stateless_model or self.faq_like(normalized)):
            return None
        return answer_key(normalized, self.agent.id, self._fingerprint, self.tier, language)


_AUDIO_MAGIC = b"AYA1"
_AUDIO_HEAD = struct.Struct("<4sII")  # magic, sample rate, chunk count


def encode_audio(chunks: Sequence[bytes], sample_rate: int) -> bytes:
    """Pack PCM chunks (kept as chunks, so playback starts as early as it did) and their rate."""
    lengths = struct.pack(f"<{len(chunks)}I", *(len(c) for c in chunks))
    return _AUDIO_HEAD.pack(_AUDIO_MAGIC, sample_rate, len(chunks)) + lengths + b"".join(chunks)


def decode_audio(raw: bytes) -> tuple[list[bytes], int] | None:
    """Inverse of :func:`encode_audio`; None if ``raw`` is not packed audio."""
    if len(raw) < _AUDIO_HEAD.size:
        return None
    magic, sample_rate, count = _AUDIO_HEAD.unpack_from(raw)
    table_end = _AUDIO_HEAD.size + 4 * count
    if magic != _AUDIO_MAGIC or len(raw) < table_end:
        return None
    lengths = struct.unpack_from(f"<{count}I", raw, _AUDIO_HEAD.size)
    if table_end + sum(lengths) != len(raw):
        return None
    chunks: list[bytes] = []
    offset = table_end
    for size in lengths:
        chunks.append(raw[offset:offset + size])
        offset += size
    return chunks, sample_rate
