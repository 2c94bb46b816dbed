"""Admission: per-kind and per-client budgets, tickets that give their slot back once, waiting sockets, offer rates."""

from __future__ import annotations

from pathlib import Path

import pytest

from aybiza.config import Settings
from aybiza.runtime import Runtime
from aybiza.session import Admission, RateLimit


def test_calls_are_admitted_up_to_the_total() -> None:
    admission = Admission(3)
    tickets = [admission.admit("twilio") for _ in range(3)]
    assert all(ticket is not None for ticket in tickets)
    assert admission.active == 3
    assert admission.admit("twilio") is None
    assert admission.admit("webrtc") is None  # a kind without its own budget shares the total
    assert admission.active == 3


def test_a_kind_with_a_budget_never_takes_more_than_it() -> None:
    admission = Admission(4, {"webrtc": 1})
    browser = admission.admit("webrtc")
    assert browser is not None and browser.kind == "webrtc"
    assert admission.admit("webrtc") is None  # the browser budget is used up...
    phones = [admission.admit("twilio") for _ in range(3)]
    assert all(phone is not None for phone in phones)  # ...and phone callers still find their slots
    assert admission.admit("twilio") is None  # the total is used up
    assert admission.counts == {"webrtc": 1, "twilio": 3}


def test_the_total_bounds_every_kind_together() -> None:
    admission = Admission(2, {"webrtc": 5})
    assert admission.admit("twilio") is not None and admission.admit("twilio") is not None
    assert admission.admit("webrtc") is None  # its own budget has room, the process does not


def test_a_released_slot_can_be_taken_again() -> None:
    admission = Admission(1)
    ticket = admission.admit("twilio")
    assert ticket is not None and admission.admit("twilio") is None
    ticket.release()
    assert admission.active == 0
    assert admission.admit("twilio") is not None


def test_release_is_idempotent() -> None:
    admission = Admission(3, {"webrtc": 2})
    first, second = admission.admit("webrtc"), admission.admit("webrtc")
    phone = admission.admit("twilio")
    assert first is not None and second is not None and phone is not None
    for _ in range(3):
        first.release()  # a session's finally and a failed answer may both release it
    assert admission.counts == {"webrtc": 1, "twilio": 1} and admission.active == 2
    assert admission.admit("webrtc") is not None
    assert admission.admit("webrtc") is None  # releasing twice did not free the second's slot too


def test_the_runtime_admits_by_its_settings(tmp_path: Path) -> None:
    runtime = Runtime(Settings(data_dir=tmp_path, max_calls=3, max_browser_calls=1))
    admission = runtime.admission
    assert admission.total == 3 and admission.per_kind == {"webrtc": 1}
    assert admission.admit("webrtc") is not None and admission.admit("webrtc") is None


# -- abuse resistance: per-client budgets, waiting connections, offer rates ----------------------------


def test_a_client_may_hold_only_its_share_of_browser_calls() -> None:
    admission = Admission(10, {"webrtc": 4}, per_client={"webrtc": 2})
    mine = [admission.admit("webrtc", "203.0.113.7") for _ in range(3)]
    assert mine[0] is not None and mine[1] is not None and mine[2] is None  # its two, no more
    assert admission.admit("webrtc", "198.51.100.2") is not None  # another address still gets in
    mine[0].release()
    assert admission.admit("webrtc", "203.0.113.7") is not None


def test_waiting_connections_take_no_call_slot_and_the_oldest_gives_way() -> None:
    admission = Admission(1, waiting_total=3, waiting_per_client=2)
    let_go: list[str] = []
    first = admission.wait_for_start("10.0.0.1", lambda: let_go.append("first"))
    admission.wait_for_start("10.0.0.1", lambda: let_go.append("second"))
    assert admission.has_room("twilio") and admission.waiting == 2  # no slot taken by waiting sockets
    admission.wait_for_start("10.0.0.1", lambda: let_go.append("third"))  # over the client's two
    assert let_go == ["first"] and admission.waiting == 2
    first.done()  # what gave way is done already: idempotent
    admission.wait_for_start("10.0.0.2", lambda: let_go.append("other"))
    admission.wait_for_start("10.0.0.3", lambda: let_go.append("more"))  # over the total of three
    assert let_go == ["first", "second"] and admission.waiting == 3 and admission.let_go == 2


def test_a_flood_of_silent_sockets_never_keeps_the_newest_one_out() -> None:
    admission = Admission(500, waiting_total=256, waiting_per_client=32)
    held = [admission.wait_for_start("198.51.100.9", lambda: None) for _ in range(2000)]
    real = admission.wait_for_start("198.51.100.9", lambda: None)  # Twilio behind the same address
    assert admission.waiting == 32 and real in admission._waiting
    real.done()
    for waiting in held:
        waiting.done()
    assert admission.waiting == 0


def test_offers_pass_a_token_bucket_per_client() -> None:
    now = [0.0]
    admission = Admission(10, offers=RateLimit(per_minute=6, burst=3, clock=lambda: now[0]))
    assert [admission.allow_offer("a") for _ in range(4)] == [True, True, True, False]
    assert admission.allow_offer("b")  # its own bucket
    assert admission.offers.retry_after("a") == pytest.approx(10.0)
    now[0] = 10.0
    assert admission.allow_offer("a") and not admission.allow_offer("a")


def test_the_rate_limiter_forgets_the_least_recent_clients() -> None:
    limit = RateLimit(per_minute=1, burst=1, max_clients=100)
    for n in range(1000):
        limit.allow(f"10.0.{n // 256}.{n % 256}")
    assert len(limit._buckets) == 100


def test_the_runtime_admits_by_its_abuse_settings(tmp_path: Path) -> None:
    runtime = Runtime(Settings(data_dir=tmp_path, max_browser_calls_per_ip=1, max_pending_streams=5,
                               max_pending_streams_per_ip=2, browser_offer_burst=1))
    admission = runtime.admission
    assert admission.per_client == {"webrtc": 1}
    assert (admission.waiting_total, admission.waiting_per_client) == (5, 2)
    assert admission.allow_offer("x") and not admission.allow_offer("x")
