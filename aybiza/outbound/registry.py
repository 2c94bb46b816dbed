"""The process's outbound calls: per-agent concurrency and dial rate, and each call's AMD verdict.

A call counts against its agent's concurrency from the moment it is dialled
until its session ends (:meth:`OutboundCalls.ended`) or, if nobody ever
answered, until it can no longer be answered (its ring time and a grace: an
unanswered call's stream never comes). The dial rate is a token bucket per
agent (:class:`~aybiza.session.admission.RateLimit`). The AMD callback sets
the call's verdict, which the call's :class:`~aybiza.outbound.gate.AnsweringMachineGate`
waits for.

One process's view: the AMD callback and the Media Stream must reach the
process that dialled (a load balancer with affinity, or one process).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from ..session.admission import RateLimit

__all__ = ["DialRefusal", "OutboundCall", "OutboundCalls", "OutboundLimits"]

_ANSWER_GRACE_S = 60.0  # past the ring time: the webhook of an answered call has come by then
_MAX_TRACKED = 10_000


@dataclass(frozen=True, slots=True)
class OutboundLimits:
    """One agent's outbound limits: calls at once, dials a minute, dials at once."""

    max_calls: int
    dials_per_minute: float
    dial_burst: int


@dataclass(frozen=True, slots=True)
class DialRefusal:
    """Why a dial was refused: HTTP status (409 concurrency, 429 rate), message and seconds to wait."""

    status: int
    error: str
    message: str
    retry_after_s: float = 0.0


@dataclass(slots=True)
class OutboundCall:
    """A call we dialled: for whom, to whom, and what answered it."""

    call_sid: str
    agent_id: str
    to: str
    dialled_at: float
    answer_by: float  # monotonic deadline for its stream to start, else it is forgotten
    started: bool = False
    answered_by: str = ""
    verdict: anyio.Event = field(default_factory=anyio.Event)

    def answer(self, answered_by: str) -> None:
        """Twilio's AMD verdict arrived (the first one counts)."""
        if not self.verdict.is_set():
            self.answered_by = answered_by
            self.verdict.set()


class OutboundCalls:
    """Outbound calls live in this process, by CallSid."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._calls: dict[str, OutboundCall] = {}
        self._rates: dict[tuple[str, float, int], RateLimit] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, call_sid: str) -> OutboundCall | None:
        """The outbound call with this SID, if we dialled it and it has not ended."""
        return self._calls.get(call_sid)

    def active(self, agent_id: str) -> int:
        """Outbound calls of ``agent_id`` ringing or in progress."""
        self._expire()
        return sum(1 for call in self._calls.values() if call.agent_id == agent_id)

    def admit(self, agent_id: str, limits: OutboundLimits) -> DialRefusal | None:
        """Take a dial for ``agent_id`` within its limits; None when it may dial now, else why not."""
        if self.active(agent_id) >= limits.max_calls:
            return DialRefusal(409, "too_many_calls", f"agent {agent_id!r} already has {limits.max_calls} outbound "
                               "call(s) ringing or in progress (its outbound_max_calls)")
        key = (agent_id, limits.dials_per_minute, limits.dial_burst)
        rate = self._rates.get(key)
        if rate is None:
            if len(self._rates) >= _MAX_TRACKED:
                self._rates.clear()
            rate = self._rates[key] = RateLimit(limits.dials_per_minute, limits.dial_burst, clock=self._clock)
        if not rate.allow(agent_id):
            return DialRefusal(429, "dial_rate", f"agent {agent_id!r} dials at most {limits.dials_per_minute:g} "
                               f"call(s) a minute (its outbound_dials_per_minute)", rate.retry_after(agent_id))
        return None

    def dialled(self, call_sid: str, agent_id: str, to: str, *, ring_s: float) -> OutboundCall:
        """Remember a call; it counts until it ends or can no longer be answered.

        Held under a key of ours while Twilio is asked (two dials at once cannot both take the last
        slot), then under its SID (:meth:`placed`), or dropped if Twilio refused (:meth:`ended`).
        """
        now = self._clock()
        call = OutboundCall(call_sid, agent_id, to, now, now + ring_s + _ANSWER_GRACE_S)
        self._calls[call_sid] = call
        return call

    def placed(self, key: str, call_sid: str) -> None:
        """The call held under ``key`` while Twilio was asked now has its SID (see :meth:`dialled`)."""
        call = self._calls.pop(key, None)
        if call is not None:
            call.call_sid = call_sid
            self._calls[call_sid] = call

    def started(self, call_sid: str) -> OutboundCall | None:
        """The call's stream started: it is live until :meth:`ended`."""
        call = self._calls.get(call_sid)
        if call is not None:
            call.started = True
        return call

    def ended(self, call_sid: str) -> None:
        """The call is over (its session ended, or it was never placed)."""
        self._calls.pop(call_sid, None)

    def _expire(self) -> None:
        now = self._clock()
        for sid in [sid for sid, call in self._calls.items() if not call.started and call.answer_by < now]:
            del self._calls[sid]
