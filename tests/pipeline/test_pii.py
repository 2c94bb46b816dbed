"""PII redaction: card numbers only when they pass Luhn, phone numbers in the formats people write, emails."""

from __future__ import annotations

import logging

import pytest

from aybiza.pipeline import CallLedger
from aybiza.pipeline.pii import RedactingFilter, luhn_valid, redact_pii

CARDS = ["4111 1111 1111 1111", "4111-1111-1111-1111", "5555555555554444", "378282246310005", "6011111111111117"]


@pytest.mark.parametrize("card", CARDS)
def test_card_numbers_that_pass_luhn_are_masked(card: str) -> None:
    text = redact_pii(f"my card is {card} thanks")
    assert not any(char.isdigit() for char in text)
    assert text.startswith("my card is ") and text.endswith(" thanks")
    assert len(text) == len(f"my card is {card} thanks")  # one mark per character: the shape stays


@pytest.mark.parametrize("number", ["4111 1111 1111 1112", "1234567890123456", "5555555555554445",
                                    "ORD-1234567890123"])
def test_numbers_that_fail_luhn_stay(number: str) -> None:
    assert not luhn_valid("".join(c for c in number if c.isdigit()))
    assert redact_pii(f"order {number} shipped") == f"order {number} shipped"


def test_luhn_check() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


@pytest.mark.parametrize("phone", ["+14155550123", "+1 415 555 0123", "+44 20 7946 0958", "(415) 555-0123",
                                   "415-555-0123", "415.555.0123", "020 7946 0958", "4155550123"])
def test_phone_numbers_are_masked(phone: str) -> None:
    text = redact_pii(f"call me on {phone} please")
    assert not any(char.isdigit() for char in text), text
    assert text.endswith(" please")


@pytest.mark.parametrize("text", ["order 4321 is late", "on 2024-01-15 at 10:30", "I paid 1200 dollars",
                                  "room 12 34", "the code is 555-0123"])
def test_short_numbers_dates_and_amounts_stay(text: str) -> None:
    assert redact_pii(text) == text


@pytest.mark.parametrize(("text", "kept"), [
    ("write to ann.lee+bills@example.co.uk today", "write to "),
    ("it's ann at example dot com", "it's "),
    ("Email: J_Doe@mail-server.example.org.", "Email: "),
])
def test_emails_are_masked_written_or_spoken(text: str, kept: str) -> None:
    redacted = redact_pii(text)
    assert redacted.startswith(kept) and len(redacted) == len(text)
    assert "ann" not in redacted and "example" not in redacted and "J_Doe" not in redacted


def test_the_ledger_redacts_pii_only_when_asked_and_always_its_secrets() -> None:
    ledger = CallLedger()
    ledger.secret("1234")
    text = "account 1234, card 4111 1111 1111 1111, mail a@b.io"
    assert ledger.redact(text) == "account ••••, card 4111 1111 1111 1111, mail a@b.io"
    ledger.pii = True
    assert ledger.redact(text) == "account ••••, card •••• •••• •••• ••••, mail •@•.••"
    assert ledger.redact_value({"to": "+14155550123", "n": [4111111111111111]}) == {
        "to": "+•••••••••••", "n": ["••••••••••••••••"]}


def test_the_log_filter_masks_the_formatted_message() -> None:
    record = logging.LogRecord("aybiza.call", logging.INFO, __file__, 1, "tool %s failed for %s", ("lookup",
                               "ann@example.com"), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "tool lookup failed for •••@•••••••.•••"
