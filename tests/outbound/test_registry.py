"""Per-agent outbound limits and the life of a dialled call in the registry."""

from __future__ import annotations

from aybiza.outbound.registry import OutboundCalls, OutboundLimits
from aybiza.testing.kit import VirtualClock

LIMITS = OutboundLimits(max_calls=2, dials_per_minute=6, dial_burst=2)


def _dial(calls: OutboundCalls, sid: str, agent: str = "sales") -> None:
    assert calls.admit(agent, LIMITS) is None
    calls.dialled(sid, agent, "+14155550100", ring_s=30)


def test_an_agent_at_its_concurrent_calls_is_refused_409_until_one_ends() -> None:
    clock = VirtualClock()
    calls = OutboundCalls(clock)
    _dial(calls, "CA1")
    _dial(calls, "CA2")
    refusal = calls.admit("sales", LIMITS)
    assert refusal is not None and (refusal.status, refusal.error) == (409, "too_many_calls")
    assert calls.admit("support", LIMITS) is None, "another agent has its own limits"
    calls.ended("CA1")
    clock.advance(10)  # the bucket has refilled one dial by now
    assert calls.admit("sales", LIMITS) is None


def test_dials_beyond_the_rate_are_refused_429_with_the_wait() -> None:
    clock = VirtualClock()
    calls = OutboundCalls(clock)
    roomy = OutboundLimits(max_calls=100, dials_per_minute=6, dial_burst=2)
    assert calls.admit("sales", roomy) is None and calls.admit("sales", roomy) is None
    refusal = calls.admit("sales", roomy)
    assert refusal is not None and refusal.status == 429 and 9 < refusal.retry_after_s <= 10
    clock.advance(10)
    assert calls.admit("sales", roomy) is None


def test_an_unanswered_call_stops_counting_once_it_can_no_longer_be_answered() -> None:
    clock = VirtualClock()
    calls = OutboundCalls(clock)
    _dial(calls, "CA1")
    _dial(calls, "CA2")
    assert calls.started("CA2") is not None  # answered: live until its session ends
    clock.advance(30 + 61)
    assert calls.active("sales") == 1 and calls.get("CA1") is None
    calls.ended("CA2")
    assert calls.active("sales") == 0


def test_the_first_verdict_counts() -> None:
    calls = OutboundCalls(VirtualClock())
    _dial(calls, "CA1")
    call = calls.get("CA1")
    assert call is not None and not call.verdict.is_set()
    call.answer("machine_end_beep")
    call.answer("human")
    assert call.verdict.is_set() and call.answered_by == "machine_end_beep"


def test_a_slot_is_held_while_twilio_is_asked_then_kept_under_the_calls_sid() -> None:
    calls = OutboundCalls(VirtualClock())
    one = OutboundLimits(max_calls=1, dials_per_minute=60, dial_burst=5)
    assert calls.admit("sales", one) is None
    calls.dialled("dialling-1", "sales", "+14155550100", ring_s=30)
    refusal = calls.admit("sales", one)
    assert refusal is not None and refusal.status == 409, "a second dial at once does not take the same slot"
    calls.placed("dialling-1", "CA9")
    call = calls.get("CA9")
    assert call is not None and call.call_sid == "CA9" and calls.get("dialling-1") is None
    calls.ended("CA9")
    assert calls.admit("sales", one) is None
