"""Per-call context shared by the processors of one call.

The context is the one mutable object of a call: identity (who, from where,
which agent), the route chosen for it, the caller's last turn end (for the
voice-to-voice latency), the :class:`~aybiza.pipeline.ledger.CallLedger`
every stage records usage and timings in, a way to make an announcement in
the local voice, and a logger that stamps the call id on every line.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .ledger import CallLedger

__all__ = ["Announce", "CallContext", "CallLogger", "Notice"]


class Notice(enum.StrEnum):
    """What a stage may ask the call to say in the local voice when something failed."""

    APOLOGY = "apology"  # "sorry, a technical problem" - the call goes on (a fallback took over)
    RETRY = "retry"  # the apology and "could you say that again?" - a turn got no answer
    HOLD = "hold"  # "one moment, please" - a reply is late
    STILL_THERE = "still_there"  # "are you still there?" - the caller has said nothing for a while
    GOODBYE = "goodbye"  # the caller stayed silent: a polite goodbye, heard in full before the call ends


Announce = Callable[[Notice], Awaitable[None]]
"""Says a notice to the caller in the local voice (always available, even when providers are not)."""


class CallLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that puts the call id on every line (``extra={"call_id": ...}``)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = kwargs.setdefault("extra", {})
        extra.setdefault("call_id", self.extra["call_id"] if self.extra else "-")
        return msg, kwargs


async def _say_nothing(notice: Notice) -> None:
    return None


@dataclass(slots=True, eq=False)
class CallContext:
    """Everything a processor may want to know about its call."""

    call_id: str
    transport: str = "twilio"
    caller: str = ""
    caller_country: str = ""
    agent_id: str = "default"
    language: str = "en"
    codec: str = "pcmu"
    region: str = "local"
    fallback_regions: tuple[str, ...] = ()
    regions_tried: list[str] = field(default_factory=list)  # every region a model request went to
    model_tier: str = "local"
    quality_tier: str = "high"
    quality_score: float = 1.0  # the call's audio quality so far, in [0, 1] (quality_tier is its band)
    custom: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    # Monotonic time the caller's last turn ended (their speech stopped);
    # the output transport turns it into the voice-to-voice latency.
    user_turn_ended_at: float | None = None
    digits: str = ""  # DTMF digits the caller pressed, in order
    # True while a tool collects keypad digits (card numbers, PINs): a recorder pauses on it (PCI).
    collecting_digits: bool = False
    ledger: CallLedger = field(default_factory=CallLedger)
    announce: Announce = _say_nothing
    log: CallLogger = field(init=False)

    def __post_init__(self) -> None:
        self.log = CallLogger(logging.getLogger("aybiza.call"), {"call_id": self.call_id})
