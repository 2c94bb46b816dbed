"""One-time call tokens."""

from __future__ import annotations

from aybiza.transports.tokens import CallTokens


def test_a_token_is_redeemed_once() -> None:
    tokens = CallTokens()
    token = tokens.mint("CA1", "+15555550100", "default")
    announcement = tokens.redeem(token)
    assert announcement is not None and announcement.caller == "+15555550100"
    assert tokens.redeem(token) is None


def test_unknown_and_expired_tokens_are_refused() -> None:
    now = [0.0]
    tokens = CallTokens(ttl_s=10, clock=lambda: now[0])
    token = tokens.mint("CA1", "", "default")
    assert tokens.redeem("forged") is None
    now[0] = 10.0
    assert tokens.redeem(token) is None


def test_tokens_are_unguessable_and_distinct() -> None:
    tokens = CallTokens()
    minted = {tokens.mint("CA", "", "a") for _ in range(100)}
    assert len(minted) == 100 and all(len(t) >= 32 for t in minted)
