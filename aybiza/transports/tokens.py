"""One-time call tokens: bind a Media Stream to the signed webhook that announced it.

``POST /twiml`` (signed by Twilio) mints a token and puts it in a
``<Parameter>``; the stream's ``start`` message must bring it back once,
before it expires, for the same call: :func:`binding_refusal` compares the
``start`` with what the webhook announced (CallSid, AccountSid, the caller's
number). A stream nobody announced gets no pipeline.

The table is bounded: one pending token per CallSid (a re-posted webhook
replaces it), a few mints per CallSid in a while (a captured webhook re-posted
in a loop mints no more), and at most ``max_pending`` tokens in all. Expired
tokens leave from the front of an insertion-ordered table, so minting never
scans it.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .ids import is_sid
from .twilio import Started

__all__ = ["Announcement", "CallTokens", "binding_refusal"]

MINTS_PER_CALL = 3
"""Tokens one CallSid may get per :data:`MINT_WINDOW_TTLS` token lifetimes (the call and two reconnects)."""
MINT_WINDOW_TTLS = 5


@dataclass(frozen=True, slots=True)
class Announcement:
    """What the signed webhook told us about a call."""

    call_sid: str
    caller: str
    agent_id: str
    expires_at: float
    account_sid: str = ""
    nonce: str = ""  # a signed token's one-time id (scale-out: :mod:`~aybiza.transports.signed_tokens`)


class CallTokens:
    """Mint and redeem one-time tokens (in memory, per process), in a bounded table."""

    def __init__(self, ttl_s: float = 120.0, clock: Callable[[], float] = time.monotonic, *,
                 max_pending: int = 2000, mints_per_call: int = MINTS_PER_CALL) -> None:
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self.mints_per_call = mints_per_call
        self._clock = clock
        self._pending: OrderedDict[str, Announcement] = OrderedDict()
        self._by_call: dict[str, str] = {}
        # CallSid -> (mints, when the window began); oldest first, bounded like the table.
        self._mints: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def mint(self, call_sid: str, caller: str, agent_id: str, *, account_sid: str = "") -> str | None:
        """A fresh token for a call the webhook announced; None when the table or this call's mints are used up.

        A token still pending for the same CallSid stops working.
        """
        now = self._clock()
        self._expire(now)
        if not self._count_mint(call_sid, now):
            return None
        previous = self._by_call.pop(call_sid, None)
        if previous is not None:
            self._pending.pop(previous, None)
        if len(self._pending) >= self.max_pending:
            return None
        token = secrets.token_urlsafe(24)
        self._pending[token] = Announcement(call_sid, caller, agent_id, now + self.ttl_s, account_sid)
        self._by_call[call_sid] = token
        return token

    def redeem(self, token: str) -> Announcement | None:
        """The announcement for ``token`` if it is valid; a token works once."""
        self._expire(self._clock())
        announcement = self._pending.pop(token, None)
        if announcement is not None and self._by_call.get(announcement.call_sid) == token:
            del self._by_call[announcement.call_sid]
        return announcement

    async def claim(self, announcement: Announcement) -> bool:
        """Whether a redeemed token is used for the first time: here always (:meth:`redeem` already took it out
        of the table); signed tokens shared by several nodes settle it in Redis."""
        return True

    def _count_mint(self, call_sid: str, now: float) -> bool:
        window = self.ttl_s * MINT_WINDOW_TTLS
        while self._mints:
            oldest, (_, began) = next(iter(self._mints.items()))
            if now - began < window and len(self._mints) <= 4 * self.max_pending:
                break
            del self._mints[oldest]
        count, began = self._mints.pop(call_sid, (0, now))
        if count >= self.mints_per_call:
            self._mints[call_sid] = (count, began)
            return False
        self._mints[call_sid] = (count + 1, began)
        return True

    def _expire(self, now: float) -> None:
        while self._pending:
            token, announcement = next(iter(self._pending.items()))
            if announcement.expires_at > now:
                return
            del self._pending[token]
            if self._by_call.get(announcement.call_sid) == token:
                del self._by_call[announcement.call_sid]


def binding_refusal(announced: Announcement, started: Started) -> str | None:
    """Why a stream's ``start`` does not belong to the call its token was minted for (None: it does)."""
    if started.call_sid != announced.call_sid:
        return "callSid does not match the call the webhook announced"
    if announced.account_sid and started.account_sid != announced.account_sid:
        return "accountSid does not match the account the webhook announced"
    caller = started.custom_parameters.get("caller")
    if caller is not None and caller != announced.caller:
        return "caller does not match the number the webhook announced"
    if not is_sid(started.stream_sid, "MZ"):
        return "streamSid is not a Twilio stream id"
    return None
