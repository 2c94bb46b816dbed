"""Twilio's final CallStatus values and the typed end reasons an outbound call's record gets."""

from __future__ import annotations

import pytest

from aybiza.errors import EndReason
from aybiza.outbound.status import FINAL_STATUSES, end_reason


@pytest.mark.parametrize(("status", "reason"), [("no-answer", EndReason.NO_ANSWER), ("canceled", EndReason.NO_ANSWER),
                                                ("busy", EndReason.BUSY), ("failed", EndReason.DIAL_FAILED),
                                                ("completed", EndReason.HANGUP)])
def test_each_final_status_is_a_typed_end_reason(status: str, reason: EndReason) -> None:
    assert end_reason(status) is reason


@pytest.mark.parametrize("status", ["queued", "initiated", "ringing", "in-progress", "", "exploded"])
def test_a_status_that_is_not_final_ends_nothing(status: str) -> None:
    assert end_reason(status) is None


def test_only_a_failed_dial_counts_as_a_failure() -> None:
    assert EndReason.NO_ANSWER.normal and EndReason.BUSY.normal and not EndReason.DIAL_FAILED.normal
    assert set(FINAL_STATUSES) == {"no-answer", "canceled", "busy", "failed", "completed"}
