"""Identifiers and text from the network, checked before they reach logs or storage.

Twilio's SIDs are two upper-case letters and 32 hex digits: ``CA`` a call,
``AC`` an account, ``MZ`` a Media Stream (docs/protocols.md §1.3). Anything
else in their place is refused. Free text a peer sends (a caller's number,
a ``From`` that is a SIP URI) keeps its printable characters only and a
bounded length: a control character in a log line forges another line.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_CALLER_CHARS", "clean_text", "is_sid", "printable"]

MAX_CALLER_CHARS = 128
"""A ``From`` longer than this (a SIP URI at most) is cut."""

_SID = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def is_sid(value: object, prefix: str) -> bool:
    """Whether ``value`` is a Twilio SID with this two-letter ``prefix`` (``CA``, ``AC``, ``MZ``)."""
    return isinstance(value, str) and value.startswith(prefix) and _SID.fullmatch(value) is not None


def printable(value: str) -> bool:
    """Whether ``value`` has no control, format or line-separator characters."""
    return all(unicodedata.category(char) not in _UNPRINTABLE for char in value)


def clean_text(value: str, max_chars: int = MAX_CALLER_CHARS) -> str:
    """``value`` without control, format or separator characters, cut to ``max_chars``."""
    if value.isascii() and value.isprintable():
        return value[:max_chars]
    return "".join(char for char in value[: max_chars * 4]
                   if unicodedata.category(char) not in _UNPRINTABLE)[:max_chars]
