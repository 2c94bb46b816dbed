"""Per-call context shared by the processors of one call.

The context is the one mutable object of a call: identity (who, from where,
which agent), the route chosen for it, the agent's speaking state (for
barge-in), usage counters (for cost) and a sink for timing samples. It is
plain data plus a logger that stamps the call id on every line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallContext", "CallLogger", "TimingSink"]

TimingSink = Callable[[str, float], None]
"""Receives ``(stage, seconds)`` samples, e.g. ``("stt_final", 0.21)``."""


class CallLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that puts the call id on every line (``extra={"call_id": ...}``)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = kwargs.setdefault("extra", {})
        extra.setdefault("call_id", self.extra["call_id"] if self.extra else "-")
        return msg, kwargs


def _ignore_timing(stage: str, seconds: float) -> None:
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
    custom: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    # True from the moment agent audio is queued for the caller until the
    # transport knows it finished playing (Twilio marks, WebRTC pacer).
    agent_speaking: bool = False
    # Monotonic time the caller's last turn ended (their speech stopped);
    # the output transport turns it into the voice-to-voice latency.
    user_turn_ended_at: float | None = None
    usage: dict[str, float] = field(default_factory=dict)
    digits: str = ""  # DTMF digits the caller pressed, in order
    timings: list[tuple[str, float]] = field(default_factory=list)
    on_timing: TimingSink = _ignore_timing
    log: CallLogger = field(init=False)

    def __post_init__(self) -> None:
        self.log = CallLogger(logging.getLogger("aybiza.call"), {"call_id": self.call_id})

    def add_usage(self, key: str, amount: float) -> None:
        """Accumulate a usage counter (``stt_seconds``, ``tts_chars``, ``tokens_in:<model>`` ...)."""
        self.usage[key] = self.usage.get(key, 0.0) + amount

    def record_timing(self, stage: str, seconds: float) -> None:
        """Keep a latency sample for this call and forward it to the process-wide sink."""
        self.timings.append((stage, seconds))
        self.on_timing(stage, seconds)
