"""Admission: per-kind budgets inside the process's total, and tickets that give their slot back once."""

from __future__ import annotations

from pathlib import Path

from aybiza.config import Settings
from aybiza.runtime import Runtime
from aybiza.session import Admission


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
