"""One-time call tokens: redeemed once, bounded, bound to the call the signed webhook announced."""

from __future__ import annotations

from aybiza.transports.tokens import Announcement, CallTokens, binding_refusal
from aybiza.transports.twilio import Started


def test_a_token_is_redeemed_once() -> None:
    tokens = CallTokens()
    token = tokens.mint("CA1", "+15555550100", "default")
    assert token is not None
    announcement = tokens.redeem(token)
    assert announcement is not None and announcement.caller == "+15555550100"
    assert tokens.redeem(token) is None


def test_unknown_and_expired_tokens_are_refused() -> None:
    now = [0.0]
    tokens = CallTokens(ttl_s=10, clock=lambda: now[0])
    token = tokens.mint("CA1", "", "default")
    assert token is not None
    assert tokens.redeem("forged") is None
    now[0] = 10.0
    assert tokens.redeem(token) is None


def test_tokens_are_unguessable_and_distinct() -> None:
    tokens = CallTokens()
    minted = {tokens.mint(f"CA{n:032x}", "", "a") for n in range(100)}  # one pending token per call
    assert len(minted) == 100 and all(t is not None and len(t) >= 32 for t in minted)


CALL, OTHER = "CA" + "1" * 32, "CA" + "2" * 32


def test_one_pending_token_per_call_and_a_few_mints_per_call() -> None:
    tokens = CallTokens()
    first = tokens.mint(CALL, "+15555550100", "default")
    second = tokens.mint(CALL, "+15555550100", "default")  # Twilio retried the webhook, or it was re-posted
    assert first is not None and second is not None and len(tokens) == 1
    assert tokens.redeem(first) is None and tokens.redeem(second) is not None  # only the newest works
    assert tokens.mint(CALL, "+15555550100", "default") is not None  # a reconnect
    assert tokens.mint(CALL, "+15555550100", "default") is None  # a captured webhook re-posted in a loop
    assert tokens.mint(OTHER, "+15555550100", "default") is not None  # other calls are not affected


def test_a_calls_mints_come_back_after_their_window() -> None:
    now = [0.0]
    tokens = CallTokens(ttl_s=10, clock=lambda: now[0])
    for _ in range(3):
        assert tokens.mint(CALL, "", "default") is not None
    assert tokens.mint(CALL, "", "default") is None
    now[0] = 50.0  # five token lifetimes later
    assert tokens.mint(CALL, "", "default") is not None


def test_the_table_is_bounded_and_expires_from_the_front() -> None:
    now = [0.0]
    tokens = CallTokens(ttl_s=10, clock=lambda: now[0], max_pending=100)
    minted = [tokens.mint(f"CA{n:032x}", "", "default") for n in range(150)]
    assert all(token is not None for token in minted[:100]) and all(token is None for token in minted[100:])
    assert len(tokens) == 100
    now[0] = 10.0  # all expired: they leave without a scan of the table on every mint
    assert tokens.mint(OTHER, "", "default") is not None and len(tokens) == 1


def _started(call_sid: str = CALL, account_sid: str = "AC" + "a" * 32, caller: str | None = "+15555550100",
             stream_sid: str = "MZ" + "b" * 32) -> Started:
    custom = {"call_token": "t"} | ({"caller": caller} if caller is not None else {})
    return Started(stream_sid, call_sid, account_sid, ("inbound",), custom, "audio/x-mulaw", 8000, 1)


def test_a_stream_must_start_as_the_webhook_announced() -> None:
    announced = Announcement(CALL, "+15555550100", "default", 0.0, account_sid="AC" + "a" * 32)
    assert binding_refusal(announced, _started()) is None
    assert binding_refusal(announced, _started(caller=None)) is None  # the caller parameter is ours, may be absent
    assert "callSid" in str(binding_refusal(announced, _started(call_sid=OTHER)))
    assert "accountSid" in str(binding_refusal(announced, _started(account_sid="AC" + "c" * 32)))
    assert "caller" in str(binding_refusal(announced, _started(caller="+19005550199")))
    for bad in ("MZ\n2024-01-01 INFO forged line", "MZ" + "b" * 40_000, "mz" + "b" * 32, ""):
        assert "streamSid" in str(binding_refusal(announced, _started(stream_sid=bad)))
