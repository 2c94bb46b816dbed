"""Twilio's answering-machine detection (AMD) verdicts, and what each one means for the call.

With ``MachineDetection=DetectMessageEnd`` and ``AsyncAmd=true`` Twilio
connects the call at once and later posts ``AnsweredBy`` to the
``AsyncAmdStatusCallback``: ``human``, ``machine_end_beep``,
``machine_end_silence``, ``machine_end_other``, ``fax`` or ``unknown``
(``machine_start`` only comes with ``MachineDetection=Enable``, which we do
not ask for; it is taken as a machine all the same). A machine's verdict
comes once its greeting ended (after the beep, when there is one), which is
exactly when a voicemail message should start.
"""

from __future__ import annotations

import enum

__all__ = ["ANSWERED_BY", "Answer", "classify_answer"]

ANSWERED_BY = frozenset({"human", "machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other",
                         "fax", "unknown"})
"""Every ``AnsweredBy`` value Twilio documents."""


class Answer(enum.StrEnum):
    """What the agent does for a verdict."""

    PERSON = "person"  # the conversation: the greeting, then turns
    VOICEMAIL = "voicemail"  # the agent's voicemail message, then hang up
    HANG_UP = "hang_up"  # a fax: nothing to say to it


def classify_answer(answered_by: str) -> Answer:
    """The agent's course for Twilio's ``AnsweredBy``; ``unknown`` (and anything new) is treated as a person.

    A person taken for a machine would hear a recorded message and be hung up on;
    a machine taken for a person merely records the greeting: the cheaper mistake wins.
    """
    if answered_by.startswith("machine_"):
        return Answer.VOICEMAIL
    if answered_by == "fax":
        return Answer.HANG_UP
    return Answer.PERSON
