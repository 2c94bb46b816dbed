"""Personal data in call text: card numbers, phone numbers and email addresses, found and masked.

Used by :meth:`aybiza.pipeline.ledger.CallLedger.redact` — the one place
text bound for a record is redacted — and by :class:`RedactingFilter` on the
log handler, so the two never disagree and a log line (an error quoting a
tool's arguments, a provider's message) never carries what the record masks.

What counts, and why so:

* **Card numbers**: 13 to 19 digits (spaces or dashes between groups allowed)
  that pass the Luhn check. The check is what keeps an order or reference
  number of the same length in the transcript: only about one in ten random
  numbers passes it, and a real card number always does.
* **Phone numbers**: ``+`` and 8 to 15 digits (E.164, separators allowed), or
  10 to 11 digits written as a phone number is (``(415) 555-0123``,
  ``415-555-0123``, ``020 7946 0958``, ``4155550123``). Shorter runs (dates,
  times, four-digit order numbers, amounts) are not phone numbers.
* **Emails**: ``name@domain.tld``, and the way a recogniser writes a spoken
  one: ``name at domain dot com``.

Every digit or letter of a match becomes ``•`` (separators kept), the same
mask the ledger uses for digits typed into a collection, so a reader sees
that something was there and roughly how long it was, and nothing more.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactingFilter", "luhn_valid", "mask", "redact_pii"]

_CARD = re.compile(r"(?<![\w+])\d(?:[ -]?\d){12,18}(?![\w])")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
_SPOKEN_EMAIL = re.compile(r"\b[\w.+-]+ at [\w-]+(?: dot [\w-]+)+\b", re.IGNORECASE)
_INTERNATIONAL = re.compile(r"(?<![\w+])\+\d(?:[ .()-]{0,2}\d){7,14}(?![\w])")
_NATIONAL = re.compile(r"(?<![\w+])(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-]?)\d{2,4}[ .-]?\d{3,4}(?![\w])|"
                       r"(?<![\w+])\d{10,11}(?![\w])")


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` (digits only) pass the Luhn check every payment card number passes."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def mask(text: str) -> str:
    """Every letter and digit of ``text`` as ``•``; separators stay."""
    return "".join("•" if char.isalnum() else char for char in text)


def _card(match: re.Match[str]) -> str:
    found = match.group()
    digits = "".join(char for char in found if char.isdigit())
    return mask(found) if 13 <= len(digits) <= 19 and luhn_valid(digits) else found


def _national(match: re.Match[str]) -> str:
    found = match.group()
    digits = sum(char.isdigit() for char in found)
    return mask(found) if 10 <= digits <= 11 else found


def redact_pii(text: str) -> str:
    """``text`` with card numbers, phone numbers and email addresses masked."""
    if not text:
        return text
    text = _EMAIL.sub(lambda match: mask(match.group()), text)
    text = _SPOKEN_EMAIL.sub(lambda match: mask(match.group()), text)
    if not any(char.isdigit() for char in text):
        return text
    text = _CARD.sub(_card, text)
    text = _INTERNATIONAL.sub(lambda match: mask(match.group()), text)
    return _NATIONAL.sub(_national, text)


class RedactingFilter(logging.Filter):
    """A log handler filter: the formatted message of every record with personal data masked.

    The message is formatted once here (``msg % args``) and the record keeps the
    redacted text, so no formatter downstream sees the original. Exceptions'
    text is left alone (it is code and types; callers do not put words there).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_pii(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        return True
