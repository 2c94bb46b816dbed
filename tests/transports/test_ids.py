"""Identifiers and text from the network, checked before logs or storage see them."""

from __future__ import annotations

import pytest

from aybiza.transports.ids import MAX_CALLER_CHARS, clean_text, is_sid, printable


@pytest.mark.parametrize("value", ["CA" + "0123456789abcdef" * 2, "CA" + "0123456789ABCDEF" * 2])
def test_twilio_sids_pass(value: str) -> None:
    assert is_sid(value, "CA") and not is_sid(value, "AC")


@pytest.mark.parametrize("value", ["", "CA1", "CAgarbage", "CA" + "0" * 31, "CA" + "0" * 33, "CA" + "g" * 32,
                                   "CA" + "0" * 31 + "\n", "CA" + "0" * 40_000, "ca" + "0" * 32, None, 7])
def test_anything_else_is_no_sid(value: object) -> None:
    assert not is_sid(value, "CA")


def test_control_characters_never_survive() -> None:
    forged = "+1555\r\n2026-01-01 12:00:00 INFO aybiza.call [CA1] call ended: hangup\x1b[2J\u2028\u202e"
    cleaned = clean_text(forged)
    assert printable(cleaned) and not printable(forged)
    assert "\n" not in cleaned and "\r" not in cleaned and "\x1b" not in cleaned and "\u202e" not in cleaned
    assert cleaned.startswith("+1555") and "call ended" in cleaned


def test_text_is_cut_to_a_bound() -> None:
    assert len(clean_text("+1" * 40_000)) == MAX_CALLER_CHARS
    assert clean_text("sip:alice@example.com") == "sip:alice@example.com"
    assert clean_text("Anonymous") == "Anonymous"
