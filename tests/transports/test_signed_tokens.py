"""Signed call tokens: minted on one node, checked on another, used once in the whole cluster."""

from __future__ import annotations

import pytest

from aybiza.transports.signed_tokens import SignedCallTokens

pytestmark = pytest.mark.anyio

CALL, ACCOUNT = "CA" + "1" * 32, "AC" + "2" * 32


def cluster(key: bytes = b"k" * 32, now: list[float] | None = None) -> tuple[SignedCallTokens, SignedCallTokens]:
    """Two nodes sharing a key and one set of used nonces (Redis, in the cluster)."""
    used: set[str] = set()
    clock = (lambda: now[0]) if now is not None else None

    async def claim_once(nonce: str, ttl_s: float) -> bool:
        if nonce in used:
            return False
        used.add(nonce)
        return True

    def make() -> SignedCallTokens:
        return (SignedCallTokens(key, claim_once, 60.0, clock=clock) if clock
                else SignedCallTokens(key, claim_once, 60.0))
    return make(), make()


async def test_a_token_minted_on_one_node_is_redeemed_once_on_another() -> None:
    a, b = cluster()
    token = a.mint(CALL, "+15555550100", "default", account_sid=ACCOUNT)
    assert token is not None
    announcement = b.redeem(token)
    assert announcement is not None
    assert (announcement.call_sid, announcement.account_sid, announcement.caller, announcement.agent_id) == (
        CALL, ACCOUNT, "+15555550100", "default")
    assert await b.claim(announcement)
    replayed = a.redeem(token)  # the signature still checks out on A...
    assert replayed is not None and not await a.claim(replayed)  # ...but its one use is spent


async def test_forged_tampered_foreign_and_expired_tokens_are_refused() -> None:
    now = [1000.0]
    a, b = cluster(now=now)
    token = a.mint(CALL, "+15555550100", "default")
    assert token is not None
    body, signature = token.split(".")
    assert b.redeem("forged") is None
    assert b.redeem(f"{body}x.{signature}") is None
    assert b.redeem(f"{body}.{signature[:-2]}AA") is None
    other, _ = cluster(key=b"x" * 32)
    assert other.redeem(token) is None  # another cluster's key
    now[0] += 61
    assert b.redeem(token) is None  # expired


async def test_mints_per_call_stay_bounded_on_each_node() -> None:
    a, _ = cluster()
    tokens = [a.mint(CALL, "", "default") for _ in range(4)]
    assert all(tokens[:3]) and tokens[3] is None
