"""Each of Twilio's AnsweredBy values leads the agent the right way."""

from __future__ import annotations

import pytest

from aybiza.outbound.amd import ANSWERED_BY, Answer, classify_answer


@pytest.mark.parametrize(("answered_by", "course"), [
    ("human", Answer.PERSON), ("unknown", Answer.PERSON), ("machine_end_beep", Answer.VOICEMAIL),
    ("machine_end_silence", Answer.VOICEMAIL), ("machine_end_other", Answer.VOICEMAIL),
    ("machine_start", Answer.VOICEMAIL), ("fax", Answer.HANG_UP),
])
def test_each_verdict_has_its_course(answered_by: str, course: Answer) -> None:
    assert answered_by in ANSWERED_BY
    assert classify_answer(answered_by) is course


def test_a_verdict_nobody_documented_is_taken_for_a_person() -> None:
    assert classify_answer("robot_overlord") is Answer.PERSON
